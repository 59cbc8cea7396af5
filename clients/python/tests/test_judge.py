"""Judge RPCs through the Python client against the live server: a compare read event by
event, a critique, Best-of-N scoring and a bulk Evaluate stream."""

from __future__ import annotations

import math

import grpc
import pytest

from autoj_client import AutojError, Client, Options, compare_item, critique_item, messages as pb

from conftest import MAX_NEW_TOKENS

QUERY = "What is the capital of France?"
FIRST = "Paris."
SECOND = "Lyon, I believe."
SHORT = Options(max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def streamed(client: Client) -> list:
    """One compare, consumed one event at a time as the server sends them."""
    stream = client.compare_stream(QUERY, FIRST, SECOND, options=SHORT)
    first = next(stream)
    assert isinstance(first, pb.Accepted), f"first event is {type(first).__name__}"
    return [first, *stream]


def test_compare_streams_accepted_deltas_verdict_usage(streamed: list) -> None:
    kinds = "".join(
        {pb.Accepted: "A", pb.CritiqueDelta: "D", pb.Verdict: "V", pb.Usage: "U"}[type(e)] for e in streamed
    )
    assert kinds[0] == "A" and kinds[-2:] == "VU", kinds
    assert set(kinds[1:-2]) == {"D"}, f"only critique deltas between Accepted and Verdict: {kinds}"

    accepted, verdict, usage = streamed[0], streamed[-2], streamed[-1]
    deltas = [e for e in streamed if isinstance(e, pb.CritiqueDelta)]
    assert accepted.protocol == pb.PROTOCOL_PAIRWISE
    assert accepted.language == pb.LANGUAGE_EN
    assert accepted.request_id and accepted.model.endswith(".gguf")
    # The router classified the query (no scenario was named).
    assert accepted.scenario and accepted.scenario_source == pb.SCENARIO_SOURCE_CLASSIFIER
    assert usage.prompt_tokens == accepted.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= MAX_NEW_TOKENS
    assert len(deltas) <= usage.completion_tokens
    assert "".join(d.text for d in deltas).strip()

    pairwise = verdict.pairwise
    assert verdict.WhichOneof("result") == "pairwise"
    assert pairwise.winner in (pb.WINNER_RESPONSE_1, pb.WINNER_RESPONSE_2, pb.WINNER_TIE)
    assert verdict.source in (pb.VERDICT_SOURCE_PARSED, pb.VERDICT_SOURCE_FORCED)
    probabilities = {
        pb.WINNER_RESPONSE_1: pairwise.p_response_1,
        pb.WINNER_RESPONSE_2: pairwise.p_response_2,
        pb.WINNER_TIE: pairwise.p_tie,
    }
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3)
    if verdict.source == pb.VERDICT_SOURCE_FORCED:
        assert pairwise.winner == max(probabilities, key=probabilities.get)


def test_critique_rates_one_response_with_a_named_scenario(client: Client) -> None:
    options = Options(max_new_tokens=MAX_NEW_TOKENS, scenario="chitchat", language="en")
    judgment = client.critique("How are you today?", "I am fine, thank you! And you?", options=options)
    (accepted,) = judgment.accepted
    assert accepted.protocol == pb.PROTOCOL_SINGLE
    assert (accepted.scenario, accepted.scenario_source) == ("chitchat", pb.SCENARIO_SOURCE_CLIENT)
    single = judgment.verdict.single
    assert 1 <= single.rating <= 10
    assert len(single.distribution) == 10
    assert math.isclose(sum(single.distribution), 1.0, abs_tol=1e-3)
    expected = sum((i + 1) * p for i, p in enumerate(single.distribution))
    assert math.isclose(single.expected_rating, expected, rel_tol=1e-3)
    assert judgment.critique.strip()
    assert judgment.usages[0].completion_tokens <= MAX_NEW_TOKENS


def test_score_names_the_candidate_with_the_highest_expected_rating(client: Client) -> None:
    candidates = ["2 + 2 = 4.", "2 + 2 = 5, obviously."]
    result = client.score("What is 2 + 2?", candidates, options=SHORT)
    assert [s.index for s in result.scores] == [0, 1]
    expected = [s.verdict.expected_rating for s in result.scores]
    assert all(1 <= e <= 10 for e in expected)
    assert result.best_index == max(range(len(expected)), key=expected.__getitem__)


def test_evaluate_streams_one_result_per_item_with_per_item_errors(client: Client, streamed: list) -> None:
    items = [
        compare_item("same-as-streamed", QUERY, FIRST, SECOND, options=SHORT),
        critique_item("single", "Name a colour.", "Blue.", options=SHORT),
        compare_item("empty", QUERY, FIRST, "", options=SHORT),
    ]
    results = {r.id: r for r in client.evaluate(items)}
    assert sorted(results) == ["empty", "same-as-streamed", "single"]

    bad = results["empty"]
    assert bad.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "response_2" in bad.error_message and not bad.events

    same = results["same-as-streamed"]
    assert same.error_code == 0
    events = [getattr(e, e.WhichOneof("event")) for e in same.events]
    # Greedy decoding: the bulk judgment writes what the streamed one wrote.
    text = lambda evs: "".join(e.text for e in evs if isinstance(e, pb.CritiqueDelta))  # noqa: E731
    assert text(events) == text(streamed)
    assert events[-2].pairwise.winner == streamed[-2].pairwise.winner

    single = results["single"]
    assert single.error_code == 0
    verdicts = [e.verdict for e in single.events if e.WhichOneof("event") == "verdict"]
    assert len(verdicts) == 1 and 1 <= verdicts[0].single.rating <= 10


def test_errors_raise_autoj_error_with_the_grpc_code(client: Client) -> None:
    with pytest.raises(AutojError) as empty:
        list(client.compare_stream(QUERY, FIRST, "", options=SHORT))
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "response_2" in empty.value.details

    with pytest.raises(AutojError) as zero_tokens:
        client.critique(QUERY, FIRST, options=Options(max_new_tokens=0))
    assert zero_tokens.value.code == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(AutojError) as no_candidates:
        client.score(QUERY, [])
    assert no_candidates.value.code == grpc.StatusCode.INVALID_ARGUMENT

    # Checked before anything is sent.
    with pytest.raises(ValueError):
        Options(language="fr").to_proto()
