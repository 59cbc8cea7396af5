"""The official `openai` package against autoj's /v1/chat/completions and /v1/models:
answers, streams, usage, log-probabilities, stop strings, and the refusals it must raise."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from conftest import API_KEY, POOL

QUESTION = [{"role": "user", "content": "Name three primary colours."}]


def client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http}/v1", api_key=key, timeout=300, max_retries=0)


def test_models_lists_the_pool(server):
    ids = [m.id for m in client(server).models.list().data]
    assert ids == [POOL]


def test_a_completion_has_text_usage_and_reason(server):
    done = client(server).chat.completions.create(model=POOL, messages=QUESTION, max_tokens=12)
    choice = done.choices[0]
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = done.usage
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert choice.finish_reason == "stop" or usage.completion_tokens == 12


def test_a_stream_carries_the_same_text_and_usage_last(server):
    c = client(server)
    whole = c.chat.completions.create(model=POOL, messages=QUESTION, max_tokens=12)
    chunks = list(c.chat.completions.create(model=POOL, messages=QUESTION, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content, "greedy: the same text streamed or not"
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_logprobs_match_the_text(server):
    done = client(server).chat.completions.create(model=POOL, messages=QUESTION, max_tokens=10,
                                                  logprobs=True, top_logprobs=3)
    entries = done.choices[0].logprobs.content
    assert len(entries) == done.usage.completion_tokens
    assert "".join(e.token for e in entries) == done.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.token == e.top_logprobs[0].token, "greedy picks the most likely token"
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1.0001


def test_a_stop_string_ends_the_text_before_it(server):
    c = client(server)
    text = c.chat.completions.create(model=POOL, messages=QUESTION, max_tokens=16).choices[0].message.content
    assert len(text) > 6, text
    stop = text[3:6]
    cut = c.chat.completions.create(model=POOL, messages=QUESTION, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [({"n": 2}, "`n`"), ({"frequency_penalty": 0.5}, "`frequency_penalty`"),
     ({"top_logprobs": 2}, "logprobs: true"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "`tools`")],
)
def test_unsupported_fields_are_400_naming_the_field(server, extra, needle):
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model=POOL, messages=QUESTION, max_tokens=4, **extra)
    assert needle in err.value.message


def test_refusals_name_the_problem_and_the_server_keeps_serving(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert "gpt-4o" in err.value.message and POOL in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=POOL, messages=[{"role": "tool", "content": "x"}], max_tokens=4)
    assert "messages[0].role" in err.value.message
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model=POOL, messages=[{"role": "user", "content": "x" * 8_000_000}], max_tokens=4)
    assert err.value.status_code == 413
    assert c.chat.completions.create(model=POOL, messages=QUESTION, max_tokens=2).choices[0].message.content


def test_api_keys_apply(keyed_server):
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, "wrong-key").chat.completions.create(model=POOL, messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, "wrong-key").models.list()
    done = client(keyed_server, API_KEY).chat.completions.create(model=POOL, messages=QUESTION, max_tokens=2)
    assert done.usage.completion_tokens >= 1


def test_raw_bodies_and_missing_keys_are_named(server, keyed_server):
    """What the package never sends: a body that is not JSON, a field of the wrong type, and
    no Authorization header at all (httpx, the package's own transport)."""
    url = f"{server.http}/v1/chat/completions"
    bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=60)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["message"], bad.text
    wrong = httpx.post(url, json={"model": POOL, "messages": QUESTION, "max_tokens": "many"}, timeout=60)
    assert wrong.status_code == 400 and "max_tokens" in wrong.text, wrong.text
    bare = httpx.post(f"{keyed_server.http}/v1/chat/completions",
                      json={"model": POOL, "messages": QUESTION, "max_tokens": 2}, timeout=60)
    assert bare.status_code == 401, bare.text
    ok = httpx.post(url, json={"model": POOL, "messages": QUESTION, "max_tokens": 2}, timeout=300)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1, ok.text
