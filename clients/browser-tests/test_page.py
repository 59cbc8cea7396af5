"""The page at `/` in headless Chromium against a live `autoj serve`: a comparison streams
its critique (at least one delta is on the page before the verdict), then the verdict with a
bar per probability and the usage; the same with an API key required, where the page is
refused without the key and served with it."""

from __future__ import annotations

import re
from typing import List

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import API_KEY

# A judgment on the default model with a debug build; generous for a busy CI machine.
JUDGE_TIMEOUT_S = 300
# Enough tokens for several critique deltas, few enough to stay quick.
MAX_NEW_TOKENS = "24"
VERDICT_LINES = {"Response 1 is better", "Response 2 is better", "Tie", "No verdict"}

# Records, in order, what the page shows: "delta" when a critique gains text, "verdict"
# when a verdict card is revealed. MutationObserver hands over the changes in the order
# the page made them, so the list is the order the user saw.
RECORDER = """
window.__seen = [];
const observer = new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target.nodeType === Node.ELEMENT_NODE ? r.target : r.target.parentElement;
    if (!el) continue;
    const critique = el.closest(".critique");
    if (critique && critique.textContent.length > 0) window.__seen.push("delta");
    if (r.type === "attributes" && el.classList.contains("verdict") && !el.hidden) {
      window.__seen.push("verdict");
    }
  }
});
observer.observe(document.getElementById("orders"),
  { subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ["hidden"] });
"""


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def wait_for(driver, what, timeout: float = 60):
    return WebDriverWait(driver, timeout).until(lambda d: what(d))


def scenarios_listed(driver) -> bool:
    return len(driver.find_elements(By.CSS_SELECTOR, "#scenario option")) > 1


def fill_example(driver) -> None:
    """Fills the form with the page's first example (a pair) and a short token limit."""
    driver.find_element(By.ID, "example").click()
    assert driver.find_element(By.ID, "response-2").get_attribute("value").strip(), "a pair"
    tokens = driver.find_element(By.ID, "max-new-tokens")
    tokens.clear()
    tokens.send_keys(MAX_NEW_TOKENS)


def run_judgment(driver) -> str:
    """Clicks Judge and waits until the page reports the end; returns the status line."""
    driver.execute_script(RECORDER)
    driver.find_element(By.ID, "judge").click()
    wait_for(driver, lambda d: status(d) == "done"
             or "error" in d.find_element(By.ID, "status").get_attribute("class"),
             JUDGE_TIMEOUT_S)
    return status(driver)


def check_judgment(driver) -> None:
    """The critique streamed before the verdict; the verdict, its bars and usage shown."""
    seen: List[str] = driver.execute_script("return window.__seen")
    assert "delta" in seen, f"no critique delta was shown: {seen}"
    assert "verdict" in seen, f"no verdict was shown: {seen}"
    assert seen.index("delta") < seen.index("verdict"), f"verdict before any delta: {seen}"
    panel = driver.find_element(By.CSS_SELECTOR, '.order[data-order="0"]')
    assert panel.find_element(By.CSS_SELECTOR, ".critique").text.strip(), "a critique"
    line = panel.find_element(By.CSS_SELECTOR, ".verdict-line").text
    assert line in VERDICT_LINES, line
    bars = panel.find_elements(By.CSS_SELECTOR, ".verdict .bar")
    names = [b.find_element(By.TAG_NAME, "span").text for b in bars]
    assert names == ["Response 1", "Response 2", "Tie"], names
    values = [b.find_element(By.CSS_SELECTOR, ".value").text for b in bars]
    assert all(re.fullmatch(r"\d{1,3}\.\d%", v) for v in values), values
    total = sum(float(v.rstrip("%")) for v in values)
    assert abs(total - 100.0) < 0.3, f"probabilities {values} do not sum to 100%"
    for bar in bars:
        fill = bar.find_element(By.CSS_SELECTOR, ".fill")
        assert fill.size["height"] > 0, "the bar is drawn"
    usage = panel.find_element(By.CSS_SELECTOR, ".usage")
    assert usage.is_displayed(), "the usage table is shown"
    rows = {}
    for tr in usage.find_elements(By.TAG_NAME, "tr"):
        name, value = (td.text for td in tr.find_elements(By.TAG_NAME, "td"))
        rows[name] = value
    assert 1 <= int(rows["generated tokens"]) <= int(MAX_NEW_TOKENS), rows


def test_compare_streams_then_shows_verdict(driver, server, shots):
    driver.get(server.http + "/")
    assert driver.title.startswith("autoj")
    wait_for(driver, scenarios_listed)
    fill_example(driver)
    assert run_judgment(driver) == "done", status(driver)
    check_judgment(driver)
    driver.save_screenshot(str(shots / "page.png"))


def test_compare_with_an_api_key(driver, keyed_server):
    driver.get(keyed_server.http + "/")
    # Without the key, the listing is refused and the page says so.
    wait_for(driver, lambda d: "401" in status(d))
    assert "UNAUTHENTICATED" in status(driver), status(driver)
    fill_example(driver)
    refused = run_judgment(driver)
    assert "401" in refused and "UNAUTHENTICATED" in refused, refused
    assert not driver.find_elements(By.CSS_SELECTOR, ".order .verdict:not([hidden])")

    # With it: the listing loads (on change) and the judgment completes.
    key = driver.find_element(By.ID, "api-key")
    key.send_keys(API_KEY)
    key.send_keys(Keys.TAB)
    wait_for(driver, scenarios_listed)
    assert run_judgment(driver) == "done", status(driver)
    check_judgment(driver)
    # The key stays in the page's memory: not in storage, not in the address.
    stored = driver.execute_script(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert API_KEY not in stored and API_KEY not in driver.current_url
