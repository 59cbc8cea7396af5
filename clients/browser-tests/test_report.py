"""The evaluation report in headless Chromium: `autoj eval --swap --html` over a few labelled
pairs (the first rows of Auto-J's pairwise test set where ../shared/autoj is present, else
hand-made ones) and rating rows of two systems, judged by the live server; the page opens
from the file with every chart present and drawn at a non-zero size, no script, and tables
whose rows are lines `autoj eval` printed."""

from __future__ import annotations

import json
import pathlib
import subprocess

from selenium.webdriver.common.by import By

from conftest import BIN, ROOT

CHARTS = ["chart-groups", "chart-confusion", "chart-swap", "chart-confidence", "chart-ratings"]
SHARED_PAIRS = ROOT.parent / "shared" / "autoj" / "testdata_pairwise.jsonl"
# Real pairs to judge: each is judged twice (swap); long prompts, so few.
REAL_ROWS = 8
EVAL_TIMEOUT_S = 600


def pairs() -> list:
    """Labelled pairwise rows: Auto-J's first rows, or hand-made ones without ../shared."""
    if SHARED_PAIRS.exists():
        with SHARED_PAIRS.open() as f:
            return [json.loads(next(f)) for _ in range(REAL_ROWS)]
    print(f"{SHARED_PAIRS} not found (fresh clone): judging hand-made pairs")
    made = [("code_generation", 0, "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"),
            ("writing_email", 1, "hi", "Dear Ann, thank you for your help last week. Best, Bo"),
            ("chitchat", 2, "Hello! How are you?", "Hi! I'm well, and you?"),
            ("open_question", 0, "Water boils at 100 C at sea level.", "Water boils at 50 C.")]
    return [{"scenario": s, "label": label, "prompt": f"A {s.replace('_', ' ')} request",
             "response 1": a, "response 2": b} for s, label, a, b in made]


def ratings() -> list:
    """Single-response rows of two systems on the same two queries."""
    rows = []
    for system, answers in (("sys-a", ["Paris.", "4"]), ("sys-b", ["Lyon, I think.", "five"])):
        for i, (query, answer) in enumerate(zip(["Capital of France?", "2 + 2?"], answers)):
            rows.append({"id": f"q{i}", "model": system, "prompt": query, "response": answer})
    return rows


def test_report_renders_every_chart(driver, server, shots, tmp_path: pathlib.Path):
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in pairs() + ratings()))
    page = tmp_path / "report.html"
    run = subprocess.run(
        [str(BIN), "eval", "--addr", f"http://{server.address}", "--swap",
         "--max-new-tokens", "16", "--concurrency", "2", "--input", str(source),
         "--output", str(tmp_path / "pred.jsonl"), "--html", str(page)],
        cwd=ROOT, capture_output=True, text=True, timeout=EVAL_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]

    driver.get(page.as_uri())
    assert driver.title == "autoj evaluation report"
    assert not driver.find_elements(By.TAG_NAME, "script")
    for chart in CHARTS:
        svg = driver.find_element(By.ID, chart)
        assert svg.tag_name == "svg"
        box = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                    "return [r.width, r.height];", svg)
        assert box[0] > 100 and box[1] > 100, f"{chart} is drawn at {box}"
        # Its bars are laid out too: the largest drawn shape has an area.
        area = driver.execute_script(
            "return Math.max(...Array.from(arguments[0].querySelectorAll('rect'))"
            ".map((e) => { const b = e.getBBox(); return b.width * b.height; }));", svg)
        assert area > 0, f"{chart} has no visible shape"

    # The tables show what eval printed.
    printed = {" ".join(line.split()) for line in run.stdout.splitlines()}
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.figures tr'))"
        ".map((tr) => Array.from(tr.cells).map((c) => c.textContent).join(' '));")
    assert len(rows) >= 12, rows
    for row in rows:
        assert " ".join(row.split()) in printed, f"{row!r} not in:\n{run.stdout}"

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 800), 6000))
    driver.save_screenshot(str(shots / "report.png"))
    driver.set_window_size(1280, 1400)
