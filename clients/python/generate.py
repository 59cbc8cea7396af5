"""Generates the Python gRPC code for autoj.v1 from proto/proto/autoj/v1/autoj.proto with
grpcio-tools (messages, type stubs and service stubs) into src/autoj_client/_proto/.

The generated files are not committed (they are git-ignored): scripts/test-python.sh runs
this before the tests, so they always match the .proto the server was built from. protoc
writes absolute imports (`from autoj.v1 import autoj_pb2`); they are rewritten to relative
ones so the code lives inside this package without claiming a top-level `autoj` module.

    python generate.py [--check]     # --check: exit 1 if the files on disk are stale
"""

import pathlib
import shutil
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"
PROTO = "autoj/v1/autoj.proto"
OUT = HERE / "src" / "autoj_client" / "_proto"
ABSOLUTE_IMPORT = "from autoj.v1 import autoj_pb2"
RELATIVE_IMPORT = "from . import autoj_pb2"


def generate() -> dict:
    """Runs protoc into a temporary folder and returns {file name: text}."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO,
        ]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed on {PROTO_ROOT / PROTO}")
        generated = pathlib.Path(tmp) / "autoj" / "v1"
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(generated.iterdir())}
    files = {name: text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT) for name, text in files.items()}
    files["__init__.py"] = '"""Code generated from autoj/v1/autoj.proto by generate.py."""\n'
    return files


def main() -> None:
    files = generate()
    if "--check" in sys.argv[1:]:
        stale = [n for n, t in files.items() if not (OUT / n).is_file() or (OUT / n).read_text(encoding="utf-8") != t]
        if stale:
            sys.exit(f"stale generated code in {OUT}: {', '.join(stale)}; run generate.py")
        print(f"{OUT} is current")
        return
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"generated {', '.join(sorted(files))} in {OUT}")


if __name__ == "__main__":
    main()
