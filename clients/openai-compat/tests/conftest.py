"""Starts the real `autoj serve` with its HTTP door on loopback for clients nobody here
wrote: the official `openai` package and Inspect AI (pinned in ../requirements.txt).

The binary is target/debug/autoj (AUTOJ_BIN overrides it), the model the default one
fetched by scripts/fetch-models.sh (AUTOJ_TEST_MODEL overrides it); a missing one is an
error, not a skip. One server without API keys, one that requires a key.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import threading
from typing import Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("AUTOJ_BIN", ROOT / "target" / "debug" / "autoj"))
MODEL = pathlib.Path(os.environ.get("AUTOJ_TEST_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
START_TIMEOUT_S = 300
API_KEY = "openai-compat-key-0123456789"
# The only pool of a one-process `autoj serve`: what `model` names.
POOL = "local"


class Server:
    """A running `autoj serve --http-listen`; its HTTP base URL in `http`."""

    def __init__(self, extra: List[str], log: pathlib.Path) -> None:
        for path, what in ((BIN, "the autoj binary (cargo build -p autoj-services)"),
                           (MODEL, "the default model (scripts/fetch-models.sh)")):
            if not path.exists():
                raise RuntimeError(f"missing {what}: {path}")
        self.log = log
        self._stderr = open(log, "wb")
        command = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                   "--model", str(MODEL), "--threads", "2", "--shutdown-grace", "1s",
                   "--no-classifier", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOJ_")}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        lines = self._lines()
        # `http on URL` then `listening on ADDR`, in whichever order the stack prints them.
        announced = dict(self._expect(lines, ("http on ", "listening on ")) for _ in range(2))
        if set(announced) != {"http on ", "listening on "}:
            self.stop()
            raise RuntimeError(f"autoj serve announced {announced}; log: {self.tail()}")
        self.grpc = announced["listening on "]
        self.http = announced["http on "].rstrip("/")

    def _lines(self) -> "queue.Queue[bytes]":
        lines: "queue.Queue[bytes]" = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        return lines

    def _expect(self, lines: "queue.Queue[bytes]", prefixes: Tuple[str, ...]) -> Tuple[str, str]:
        """The next line of stdout as (its prefix, the rest); it must start with one."""
        try:
            line = lines.get(timeout=START_TIMEOUT_S).decode().strip()
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"autoj serve did not start in {START_TIMEOUT_S} s; log: {self.tail()}")
        for prefix in prefixes:
            if line.startswith(prefix):
                return prefix, line.removeprefix(prefix)
        self.stop()
        raise RuntimeError(f"expected one of {prefixes!r}, got {line!r}; log: {self.tail()}")

    def tail(self) -> str:
        if not self._stderr.closed:
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
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"{API_KEY}\n")
    running = Server(["--api-keys-file", str(keys)], tmp_path_factory.mktemp("keyed") / "autoj.log")
    yield running
    running.stop()
