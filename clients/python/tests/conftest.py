"""Starts the real `autoj serve` on loopback (port 0) for the tests and hands them a Client.

The server is the binary `cargo test`/`cargo build` leaves in target/debug (AUTOJ_BIN
overrides it) serving the default model fetched by scripts/fetch-models.sh (AUTOJ_TEST_MODEL
overrides it), run from the repository root so it finds the classifier and ONNX Runtime.
scripts/test-python.sh makes sure all three exist; here a missing one is an error, not a
skip, so a broken setup cannot pass silently.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import threading
from typing import Iterator, List

import pytest

from autoj_client import Client

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("AUTOJ_BIN", ROOT / "target" / "debug" / "autoj"))
MODEL = pathlib.Path(os.environ.get("AUTOJ_TEST_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
# The start includes loading the model and the classifier; generous for a busy CI machine.
START_TIMEOUT_S = 300
# Keeps every judgment short: the default model is slow on CPU (a debug build more so).
MAX_NEW_TOKENS = 8
# An API key for the server that requires one.
API_KEY = "pytest-key-0123456789abcdef"


class Server:
    """A running `autoj serve`; stopped (SIGTERM, then kill) when the session ends."""

    def __init__(self, extra: List[str], log: pathlib.Path) -> None:
        for path, what in ((BIN, "the autoj binary (cargo build -p autoj-services)"),
                           (MODEL, "the default model (scripts/fetch-models.sh)")):
            if not path.exists():
                raise RuntimeError(f"missing {what}: {path}")
        self.log = log
        self._stderr = open(log, "wb")
        # The default (batched) scheduler; the judge crate is optimised even in the dev
        # profile, so the debug binary serves at a usable speed.
        command = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--model", str(MODEL),
                   "--threads", "2", "--shutdown-grace", "1s", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOJ_")}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self.address = self._wait_for_address()

    def _wait_for_address(self) -> str:
        lines: "queue.Queue[bytes]" = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S).decode().strip()
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"autoj serve did not start in {START_TIMEOUT_S} s; log: {self.tail()}")
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"unexpected first line {line!r}; log: {self.tail()}")
        return line.removeprefix("listening on ")

    def tail(self) -> str:
        self._stderr.flush()
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


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
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"# test keys\n{API_KEY}\n")
    running = Server(["--api-keys-file", str(keys), "--no-classifier"],
                     tmp_path_factory.mktemp("keyed") / "autoj.log")
    yield running
    running.stop()
