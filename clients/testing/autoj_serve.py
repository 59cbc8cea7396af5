"""A real `autoj serve` on loopback for the client test suites (clients/python,
clients/browser-tests, clients/openai-compat): started from the repository root so it finds
the classifier and ONNX Runtime, stopped with SIGTERM (then kill). Standard library only, so
every suite's pinned environment can import it.

The binary is target/debug/autoj (AUTOJ_BIN overrides it), the model the default one fetched
by scripts/fetch-models.sh (AUTOJ_TEST_MODEL overrides it). A missing one is an error, not a
skip, so a broken setup cannot pass silently.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import threading
from typing import List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOJ_BIN", ROOT / "target" / "debug" / "autoj"))
MODEL = pathlib.Path(os.environ.get("AUTOJ_TEST_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
# Loading the model and the classifier; generous for a busy CI machine.
START_TIMEOUT_S = 300


class Server:
    """A running `autoj serve`: its gRPC address in `address` and, started with `http=True`
    (`--http-listen` on loopback), its HTTP door's base URL in `http`."""

    def __init__(self, extra: List[str], log: pathlib.Path, http: bool = False) -> None:
        for path, what in ((BIN, "the autoj binary (cargo build -p autoj-services)"),
                           (MODEL, "the default model (scripts/fetch-models.sh)")):
            if not path.exists():
                raise RuntimeError(f"missing {what}: {path}")
        self.log = log
        self._stderr = open(log, "wb")
        # The default (batched) scheduler; the judge crate is optimised even in the dev
        # profile, so the debug binary serves at a usable speed.
        door = ["--http-listen", "127.0.0.1:0"] if http else []
        command = [str(BIN), "serve", "--listen", "127.0.0.1:0", *door, "--model", str(MODEL),
                   "--threads", "2", "--shutdown-grace", "1s", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOJ_")}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self.http: Optional[str] = None
        self.address = self._wait_for_address()
        if http and self.http is None:
            self.stop()
            raise RuntimeError(f"autoj serve announced no HTTP door; log: {self.tail()}")

    def _wait_for_address(self) -> str:
        """Reads stdout until `listening on ADDR`, noting `http on URL` on the way."""
        lines: "queue.Queue[bytes]" = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S).decode().strip()
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"autoj serve did not start in {START_TIMEOUT_S} s; log: {self.tail()}")
            if line.startswith("http on "):
                self.http = line.removeprefix("http on ").rstrip("/")
            elif line.startswith("listening on "):
                return line.removeprefix("listening on ")
            else:
                self.stop()
                raise RuntimeError(f"unexpected line {line!r}; log: {self.tail()}")

    def tail(self) -> str:
        """The end of the server's log."""
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


def keyed(folder: pathlib.Path, key: str, log: pathlib.Path, http: bool = False) -> Server:
    """A server that requires `key` (`--api-keys-file` in `folder`), without the classifier."""
    keys = folder / "api-keys"
    keys.write_text(f"# test keys\n{key}\n")
    return Server(["--api-keys-file", str(keys), "--no-classifier"], log, http=http)
