"""Scenarios RPCs through the Python client: classification, the catalog, criteria; and API
keys on a server that requires them."""

from __future__ import annotations

import pathlib
import tomllib

import grpc
import pytest

from autoj_client import AutojError, Client

from conftest import API_KEY, ROOT


def catalog() -> list:
    with open(pathlib.Path(ROOT) / "router" / "data" / "scenarios.toml", "rb") as f:
        return tomllib.load(f)["scenario"]


def test_classify_returns_top_k_most_probable_first(client: Client) -> None:
    queries = ["write a python function that reverses a list", "Translate 'good morning' into German."]
    results = client.classify(queries, top_k=3)
    assert len(results) == 2
    groups = {s["name"]: s.get("group", "") for s in catalog()}
    for top in results:
        assert len(top) == 3
        probabilities = [s.probability for s in top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        for score in top:
            assert score.group == groups[score.scenario]
    assert results[0][0].group == "Code"


def test_list_matches_the_catalog_and_criteria_inherit_first(client: Client) -> None:
    scenarios = client.list_scenarios()
    assert [(s.name, s.group) for s in scenarios] == [(s["name"], s.get("group", "")) for s in catalog()]
    assert all(s.description for s in scenarios)

    criteria = client.get_criteria("code_generation")
    assert criteria and all(c.name and c.content for c in criteria)
    inherited = [bool(c.inherited_from) for c in criteria]
    assert inherited == sorted(inherited, reverse=True), "inherited criteria come first"
    assert any(inherited) and not all(inherited)


def test_unknown_scenario_is_an_error_with_its_code(client: Client) -> None:
    with pytest.raises(AutojError) as unknown:
        client.get_criteria("no_such_scenario")
    assert unknown.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_scenario" in unknown.value.details


def test_api_keys_are_sent_as_bearer_tokens(keyed_server) -> None:
    for key in (None, "wrong-key-0123456789"):
        with Client(keyed_server.address, api_key=key, timeout=60) as anonymous:
            with pytest.raises(AutojError) as refused:
                anonymous.list_scenarios()
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(keyed_server.address, api_key=API_KEY, timeout=60) as keyed:
        assert keyed.list_scenarios()
