#!/usr/bin/env python3
"""The engine's import graph, and the layout rules it must keep (issue 25).

Reads every .rs file under judge/src/engine, resolves its `crate::engine::...`, `super::...`,
`self::...` and child-module paths (in `use`, `pub use`, function bodies and expressions) to
the files they name, following `pub use` re-exports to the file that defines the item, and
prints:

- the file-level edges and the folder-level edges (a folder is the directory a file sits in,
  relative to judge/src/engine; files directly in it are the folder `engine`);
- every cycle across folders: strongly connected components of the file graph whose files
  sit in more than one folder, and cycles between folders in the folder graph (the folder
  `engine`, which holds the shared pieces every backend uses, left out);
- the forbidden edges: the CPU kernels importing attention, the device backend importing the
  CPU backend, the scheduler importing any backend.

`--check` prints only the problems and exits 1 when there is any. Python 3 stdlib only.
"""

import argparse
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SRC = os.path.join(ROOT, "judge", "src")
ENGINE = os.path.join(SRC, "engine")

# Which files belong to which part, by folder (relative to judge/src/engine).
CPU_FOLDERS = ("cpu",)
KERNEL_FOLDERS = ("cpu/kernels",)
SCHEDULER_FOLDERS = ("scheduler",)
DEVICE_FOLDERS = ("device",)
# Before the split (issue 25) the CPU backend and the scheduler shared `batch/`: these files
# of it were the scheduler, the rest the CPU backend.
OLD_SCHEDULER_FILES = {"batch/scheduler.rs", "batch/finish.rs", "batch/verdict.rs",
                       "batch/backend.rs", "batch/mod.rs", "batch/test_values.rs"}


def under(rel, folders):
    return any(rel == f or rel.startswith(f + "/") for f in folders)


def is_cpu_backend(rel):
    if under(rel, CPU_FOLDERS):
        return True
    return rel.startswith("batch/") and rel not in OLD_SCHEDULER_FILES


def is_kernel(rel):
    return under(rel, KERNEL_FOLDERS) or rel.startswith("batch/kernels/")


def is_attention(rel):
    return os.path.basename(rel).startswith("attention")


def is_scheduler(rel):
    return under(rel, SCHEDULER_FOLDERS)


def is_device(rel):
    return under(rel, DEVICE_FOLDERS)


def folder_of(rel):
    d = os.path.dirname(rel)
    return d if d else "engine"


# --- source text ---------------------------------------------------------------------------

def strip_comments_and_strings(text):
    """Blank out comments, string and char literals (keeping newlines and braces' positions)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a): blank only literals.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}}` -> [['a','b'], ['a','c','d'], ['a','c','e']]."""
    tree = re.sub(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*", "", tree)
    tree = re.sub(r"\s+", "", tree)
    results = []

    def parse(s, prefix):
        # Split the top level of s by commas.
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for p in parts:
            if not p:
                continue
            brace = p.find("{")
            if brace >= 0:
                head = p[:brace].rstrip(":")
                inner = p[brace + 1:p.rfind("}")]
                parse(inner, prefix + [x for x in head.split("::") if x])
            else:
                results.append(prefix + [x for x in p.split("::") if x])

    parse(tree, [])
    return results


# --- modules -------------------------------------------------------------------------------

class Module:
    """One module: a file, or an inline `mod name { ... }` inside one."""

    def __init__(self, path, file_rel, parent=None):
        self.path = path  # ['engine', 'batch', 'kernels']
        self.file_rel = file_rel  # file relative to judge/src/engine
        self.parent = parent
        self.children = {}  # name -> Module
        self.reexports = {}  # name -> list of segment paths (absolute) from pub use


def module_path_of_file(abs_path):
    rel = os.path.relpath(abs_path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def load_files():
    files = {}
    for dirpath, _, names in os.walk(ENGINE):
        for name in names:
            if name.endswith(".rs"):
                p = os.path.join(dirpath, name)
                files[os.path.relpath(p, ENGINE).replace(os.sep, "/")] = p
    return files


USE_RE = re.compile(r"\b(pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);")
MOD_OPEN_RE = re.compile(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{")
PATH_RE = re.compile(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def scan(files):
    """Modules by path, and per file a list of (module, kind, segments, pub) references."""
    modules = {}
    refs = []
    for rel, p in sorted(files.items()):
        mpath = tuple(module_path_of_file(p))
        mod = modules.setdefault(mpath, Module(list(mpath), rel))
        mod.file_rel = rel
        text = strip_comments_and_strings(open(p, encoding="utf-8").read())
        # Walk the text tracking inline `mod x {` blocks by brace depth.
        stack = [(mod, -1)]  # (module, depth at which it closes)
        depth = 0
        uses = [(m.start(), m.end(), m) for m in USE_RE.finditer(text)]
        use_spans = [(a, b) for a, b, _ in uses]
        events = sorted(
            [(m.start(), "mod", m) for m in MOD_OPEN_RE.finditer(text)]
            + [(a, "use", m) for a, _, m in uses]
            + [(m.start(), "path", m) for m in PATH_RE.finditer(text)]
            + [(k, "brace", ch) for k, ch in enumerate(text) if ch in "{}"]
        )
        for at, kind, m in events:
            if kind == "brace":
                if m == "{":
                    depth += 1
                else:
                    depth -= 1
                    while len(stack) > 1 and stack[-1][1] == depth:
                        stack.pop()
            elif kind == "mod":
                cur = stack[-1][0]
                child_path = tuple(cur.path + [m.group(1)])
                child = modules.setdefault(child_path, Module(list(child_path), rel, cur))
                child.file_rel = rel
                cur.children[m.group(1)] = child
                # The `{` of this mod is the next brace event: it opens at `depth`.
                stack.append((child, depth))
            elif kind == "use":
                cur = stack[-1][0]
                for segs in expand_use_tree(m.group(2)):
                    refs.append((cur, "use", segs, bool(m.group(1))))
            elif kind == "path":
                if any(a <= at < b for a, b in use_spans):
                    continue
                refs.append((stack[-1][0], "path", m.group(1).split("::"), False))
    # Parent links and child modules declared by file (mod x;).
    for mpath, mod in modules.items():
        if len(mpath) > 1 and mod.parent is None:
            parent = modules.get(mpath[:-1])
            if parent is not None:
                mod.parent = parent
                parent.children.setdefault(mpath[-1], mod)
    return modules, refs


def absolute(mod, segs, modules):
    """Segments relative to `mod` -> absolute module-path segments, or None if external."""
    if not segs:
        return None
    head = segs[0]
    if head == "crate":
        return segs[1:]
    if head in ("super", "self"):
        cur = mod
        rest = list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                cur = cur.parent if cur.parent is not None else cur
            rest = rest[1:]
        return cur.path + rest
    if head in mod.children:
        return mod.path + segs
    return None


def resolve(abs_segs, modules, seen=None):
    """Absolute segments -> the set of files they name (following pub use re-exports)."""
    seen = seen or set()
    key = tuple(abs_segs)
    if key in seen:
        return set()
    seen.add(key)
    # Longest prefix that is a module.
    for k in range(len(abs_segs), 0, -1):
        mod = modules.get(tuple(abs_segs[:k]))
        if mod is None:
            continue
        rest = abs_segs[k:]
        if rest and rest[0] in mod.reexports:
            out = set()
            for target in mod.reexports[rest[0]]:
                out |= resolve(target + rest[1:], modules, seen)
            if out:
                return out
        if rest and rest[0] == "*":
            return {mod.file_rel}
        return {mod.file_rel}
    return set()


def build_graph():
    files = load_files()
    modules, refs = scan(files)
    # Re-exports: `pub use a::b::Name;` in module M makes M::Name stand for a::b::Name.
    for mod, kind, segs, pub in refs:
        if kind == "use" and pub and segs and segs[-1] != "*":
            target = absolute(mod, segs, modules)
            if target and target[0] == "engine":
                mod.reexports.setdefault(segs[-1], []).append(target)
    edges = {}
    for mod, kind, segs, _ in refs:
        target = absolute(mod, segs, modules)
        if not target or target[0] != "engine":
            continue
        for dst in resolve(target, modules):
            src = mod.file_rel
            if dst != src:
                edges.setdefault(src, set()).add(dst)
    return sorted(files), edges


def sccs(nodes, edges):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def forbidden(edges):
    bad = []
    for src, dsts in sorted(edges.items()):
        for dst in sorted(dsts):
            why = None
            if is_kernel(src) and is_attention(dst):
                why = "the CPU kernels import attention (SIMD helpers live with the kernels)"
            elif is_device(src) and is_cpu_backend(dst):
                why = "the device backend imports the CPU backend"
            elif is_scheduler(src) and (is_cpu_backend(dst) or is_device(dst)):
                why = "the scheduler imports a backend"
            if why:
                bad.append((src, dst, why))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="print only the problems; exit 1 when there is a cross-folder cycle "
                         "or a forbidden edge")
    args = ap.parse_args()
    nodes, edges = build_graph()

    folder_edges = {}
    for src, dsts in edges.items():
        for dst in dsts:
            a, b = folder_of(src), folder_of(dst)
            if a != b:
                folder_edges.setdefault(a, set()).add(b)
    folders = sorted({folder_of(n) for n in nodes})

    file_cycles = [c for c in sccs(nodes, edges) if len({folder_of(f) for f in c}) > 1]
    inner = {a: {b for b in bs if b != "engine"} for a, bs in folder_edges.items() if a != "engine"}
    folder_cycles = [c for c in sccs([f for f in folders if f != "engine"], inner) if len(c) > 1]
    bad = forbidden(edges)

    if not args.check:
        print("# file-level edges")
        for src in nodes:
            for dst in sorted(edges.get(src, ())):
                print(f"{src} -> {dst}")
        print("\n# folder-level edges")
        for a in folders:
            for b in sorted(folder_edges.get(a, ())):
                print(f"{a} -> {b}")
        print("\n# cycles inside one folder (files)")
        for c in sccs(nodes, edges):
            if len(c) > 1 and len({folder_of(f) for f in c}) == 1:
                print("  " + " <-> ".join(c))
        print()
    print("# cycles across folders (files)")
    for c in file_cycles:
        print("  " + " <-> ".join(c))
    print("# cycles between folders")
    for c in folder_cycles:
        print("  " + " <-> ".join(c))
    print("# forbidden edges")
    for src, dst, why in bad:
        print(f"  {src} -> {dst}: {why}")
    problems = len(file_cycles) + len(folder_cycles) + len(bad)
    print(f"# {problems} problem(s)")
    if args.check and problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
