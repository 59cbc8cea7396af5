"""Fixtures of the browser tests: a live `autoj serve` with its HTTP door (one open, one
that requires an API key) and a headless Chromium driven by Selenium.

The server is clients/testing/autoj_serve.py's (the debug binary, the default model).
Chromium and chromedriver are
Debian's (CHROMIUM_BIN and CHROMEDRIVER_BIN override their paths). scripts/test-browser.sh
makes sure all of them exist; here a missing one is an error, not a skip, so a broken setup
cannot pass silently.

Screenshots go to AUTOJ_SCREENSHOT_DIR when it is set (docs/images is refreshed with
`AUTOJ_SCREENSHOT_DIR=docs/images scripts/test-browser.sh`), else to a temporary folder.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "testing"))
from autoj_serve import BIN, ROOT, Server, keyed  # noqa: E402,F401  (BIN: for the tests)

CHROMIUM = pathlib.Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
CHROMEDRIVER = pathlib.Path(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
# The key the keyed server requires.
API_KEY = "browser-key-0123456789abcdef"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server([], tmp_path_factory.mktemp("serve") / "autoj.log", http=True)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server that requires an API key (`--api-keys-file`)."""
    running = keyed(tmp_path_factory.mktemp("keys"), API_KEY,
                    tmp_path_factory.mktemp("keyed") / "autoj.log", http=True)
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
