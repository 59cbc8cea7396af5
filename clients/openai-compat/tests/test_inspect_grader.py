"""Inspect AI with autoj as its grader: a tiny evaluation whose `model_graded_qa` scorer
calls autoj through Inspect's `openai-api` provider (an OpenAI-compatible endpoint named by
JUDGE_BASE_URL). The answers graded come from the same endpoint: Inspect's own mock model
counts its usage with a tiktoken vocabulary it downloads, and tests run offline."""

from __future__ import annotations

from inspect_ai import Task, eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig, get_model
from inspect_ai.scorer import model_graded_qa
from inspect_ai.solver import generate

from conftest import POOL


def test_inspect_completes_an_evaluation_graded_by_autoj(server, monkeypatch, tmp_path):
    monkeypatch.setenv("JUDGE_BASE_URL", f"{server.http}/v1")
    monkeypatch.setenv("JUDGE_API_KEY", "unused")
    grader = get_model(f"openai-api/judge/{POOL}", config=GenerateConfig(max_tokens=16, temperature=0))
    task = Task(
        dataset=[Sample(input="What is 2 + 2?", target="4"),
                 Sample(input="What colour is the sky?", target="blue")],
        solver=[generate()],
        scorer=model_graded_qa(model=grader),
    )
    [log] = inspect_eval(task, model=grader, log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error and log.error.traceback
    assert log.results.completed_samples == 2
    for sample in log.samples:
        [score] = sample.scores.values()
        # model_graded_qa keeps the grader's own words as the explanation.
        assert score.explanation, sample
    usage = log.stats.model_usage
    assert f"openai-api/judge/{POOL}" in usage, usage
    assert usage[f"openai-api/judge/{POOL}"].output_tokens >= 2
