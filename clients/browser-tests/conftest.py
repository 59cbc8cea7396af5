"""Fixtures of the browser tests: a live `autoj serve` with its HTTP door (one open, one
that requires an API key) and a headless Chromium driven by Selenium.

The server is the binary in target/debug (AUTOJ_BIN overrides it) serving the default model
fetched by scripts/fetch-models.sh (AUTOJ_TEST_MODEL overrides it), started from the
repository root so it finds the classifier and ONNX Runtime. Chromium and chromedriver are
Debian's (CHROMIUM_BIN and CHROMEDRIVER_BIN override their paths). scripts/test-browser.sh
makes sure all of them exist; here a missing one is an error, not a skip, so a broken setup
cannot pass silently.

Screenshots go to AUTOJ_SCREENSHOT_DIR when it is set (docs/images is refreshed with
`AUTOJ_SCREENSHOT_DIR=docs/images scripts/test-browser.sh`), else to a temporary folder.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import threading
from typing import Iterator, List, Optional

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOJ_BIN", ROOT / "target" / "debug" / "autoj"))
MODEL = pathlib.Path(os.environ.get("AUTOJ_TEST_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
CHROMIUM = pathlib.Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
CHROMEDRIVER = pathlib.Path(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
# Loading the model and the classifier; generous for a busy CI machine.
START_TIMEOUT_S = 300
# The key the keyed server requires.
API_KEY = "browser-key-0123456789abcdef"


class Server:
    """A running `autoj serve --http-listen`; stopped (SIGTERM, then kill) at the end."""

    def __init__(self, extra: List[str], log: pathlib.Path) -> None:
        for path, what in ((BIN, "the autoj binary (cargo build -p autoj-services)"),
                           (MODEL, "the default model (scripts/fetch-models.sh)")):
            if not path.exists():
                raise RuntimeError(f"missing {what}: {path}")
        self.log = log
        self._stderr = open(log, "wb")
        command = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                   "--model", str(MODEL), "--threads", "2", "--shutdown-grace", "1s", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOJ_")}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self.http: Optional[str] = None
        self.address = self._wait_for_address()
        if self.http is None:
            self.stop()
            raise RuntimeError(f"autoj serve announced no HTTP door; log: {self.tail()}")

    def _wait_for_address(self) -> str:
        """Reads stdout until `listening on ADDR`, noting `http on URL` on the way."""
        lines: "queue.Queue[bytes]" = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout
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
    """A second server that requires an API key (`--api-keys-file`)."""
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"# test keys\n{API_KEY}\n")
    running = Server(["--api-keys-file", str(keys), "--no-classifier"],
                     tmp_path_factory.mktemp("keyed") / "autoj.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def driver() -> Iterator[webdriver.Chrome]:
    """Headless Chromium: Debian's binary and driver, nothing downloaded."""
    for path, what in ((CHROMIUM, "chromium (scripts/install-chromium.sh)"),
                       (CHROMEDRIVER, "chromedriver (scripts/install-chromium.sh)")):
        if not path.exists():
            raise RuntimeError(f"missing {what}: {path}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1400", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    chrome.set_script_timeout(30)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Where screenshots go."""
    folder = os.environ.get("AUTOJ_SCREENSHOT_DIR")
    # A relative folder is taken from the repository root.
    path = ROOT / folder if folder else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path
