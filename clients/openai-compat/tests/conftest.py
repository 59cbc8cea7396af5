"""Starts the real `autoj serve` with its HTTP door on loopback for clients nobody here
wrote: the official `openai` package and Inspect AI (pinned in ../requirements.txt).

The server is clients/testing/autoj_serve.py's (the debug binary, the default model). One
server without API keys, one that requires a key.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Iterator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "testing"))
from autoj_serve import Server, keyed  # noqa: E402

API_KEY = "openai-compat-key-0123456789"
# The only pool of a one-process `autoj serve`: what `model` names.
POOL = "local"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(["--no-classifier"], tmp_path_factory.mktemp("serve") / "autoj.log", http=True)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = keyed(tmp_path_factory.mktemp("keys"), API_KEY,
                    tmp_path_factory.mktemp("keyed") / "autoj.log", http=True)
    yield running
    running.stop()
