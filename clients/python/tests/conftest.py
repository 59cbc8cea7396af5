"""Starts the real `autoj serve` on loopback (port 0) for the tests and hands them a Client.

The server is clients/testing/autoj_serve.py's: the binary `cargo test`/`cargo build` leaves
in target/debug serving the default model (scripts/test-python.sh makes sure both exist).
"""

from __future__ import annotations

import pathlib
import sys
from typing import Iterator

import pytest

from autoj_client import Client

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "testing"))
from autoj_serve import ROOT, Server, keyed  # noqa: E402,F401  (ROOT: for the tests)

# Keeps every judgment short: the default model is slow on CPU (a debug build more so).
MAX_NEW_TOKENS = 8
# An API key for the server that requires one.
API_KEY = "pytest-key-0123456789abcdef"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server([], tmp_path_factory.mktemp("serve") / "autoj.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[Client]:
    with Client(server.address, timeout=300) as connected:
        yield connected


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server that requires an API key (`--api-keys-file`)."""
    running = keyed(tmp_path_factory.mktemp("keys"), API_KEY, tmp_path_factory.mktemp("keyed") / "autoj.log")
    yield running
    running.stop()
