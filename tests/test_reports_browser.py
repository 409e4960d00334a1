"""The subject and group pages in headless Chromium: offline, figures loaded, flicker works."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bmex_wf.reports import check_report, generate_subject_report, run_group_level

from .test_reports import build_outputs

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--window-size=1400,1000",
                # lets the test read the figures' SVG documents (file:// pages are opaque
                # origins otherwise); it does not enable any network access
                "--allow-file-access-from-files")
#: Schemes that never leave the machine.
LOCAL_SCHEMES = {"file", "data"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.skip(f"{path} is absent (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    # were anything to try the network, it is refused (and still logged below)
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*",
                                                               "ws://*", "wss://*"]})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = build_outputs(tmp_path_factory.mktemp("browser"))
    (out / "logs").mkdir()
    (out / "logs" / "CITATION.md").write_text("Images were enhanced with bmex-wf.\n")
    subject = generate_subject_report(out, "01", run_uuid="browser-test")
    _, group = run_group_level(out)
    return {"subject": subject, "group": group}


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory):
    folder = os.environ.get("BMEX_ARTIFACTS_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _requests(driver) -> list[dict]:
    """Network.requestWillBeSent events logged since the last call."""
    events = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            events.append(message["params"])
    return events


def _load(driver, page: Path) -> list[dict]:
    _requests(driver)  # drop what the browser did on its own before this page
    driver.get(page.as_uri())
    for _ in range(100):
        if driver.execute_script(
                "return document.readyState === 'complete' && Array.from("
                "document.querySelectorAll('object')).every(o => o.contentDocument && "
                "o.contentDocument.readyState === 'complete')"):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    return _requests(driver)


def _assert_offline(requests: list[dict], page: Path):
    urls = [r["request"]["url"] for r in requests]
    assert page.as_uri() in urls
    remote = [u for u in urls if urlparse(u).scheme not in LOCAL_SCHEMES | {"chrome", "about"}]
    assert remote == [], f"network requests attempted: {remote}"
    from_page = [r["request"]["url"] for r in requests
                 if r.get("documentURL", "").startswith("file:")]
    assert {urlparse(u).scheme for u in from_page} <= LOCAL_SCHEMES


def _full_screenshot(driver, path: Path):
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 100, 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    assert path.stat().st_size > 10_000


def test_subject_page_offline_with_all_figures(browser, pages, artifacts_dir):
    page = pages["subject"]
    assert check_report(page) == []
    _assert_offline(_load(browser, page), page)

    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth])")
    assert len(images) == 3  # brain mask, tissue contours, histogram
    for src, complete, width in images:
        assert complete and width > 0, src
    objects = browser.execute_script(
        "return Array.from(document.querySelectorAll('object')).map(o => [o.data, "
        "o.clientWidth, o.contentDocument ? o.contentDocument.documentElement.tagName : null,"
        " o.contentDocument ? Array.from(o.contentDocument.querySelectorAll('image'))"
        ".map(i => i.getBBox().width) : []])")
    assert len(objects) == 1  # the before/after flicker
    data, width, root, rasters = objects[0]
    assert data.endswith("_desc-enhancement_T1w.svg") and width > 0 and root == "svg"
    # 7 cuts x 3 orientations x (original, enhanced), each drawn
    assert len(rasters) >= 42 and min(rasters) > 0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    _full_screenshot(browser, artifacts_dir / "sub-01.png")


def test_flicker_toggles_on_hover(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    _load(browser, pages["subject"])
    obj = browser.find_element("css selector", "object")
    browser.execute_script("arguments[0].scrollIntoView()", obj)
    opacity = ("return parseFloat(getComputedStyle(document.querySelector('object')"
               ".contentDocument.querySelector('.foreground-svg')).opacity)")
    time.sleep(0.5)
    assert browser.execute_script(opacity) == pytest.approx(1.0)  # paused: original shown
    ActionChains(browser).move_to_element(obj).perform()
    samples = []
    for _ in range(25):
        time.sleep(0.08)
        samples.append(browser.execute_script(opacity))
    assert min(samples) < 0.5, samples  # the enhanced image shows through
    ActionChains(browser).move_to_element(browser.find_element("css selector", "nav")).perform()
    time.sleep(0.2)
    held = browser.execute_script(opacity)
    time.sleep(0.4)
    assert browser.execute_script(opacity) == pytest.approx(held)  # paused again


def test_page_controls_work_without_libraries(browser, pages):
    _load(browser, pages["subject"])
    shown = ("return Array.from(document.querySelectorAll('.accordion-collapse'))"
             ".map(e => getComputedStyle(e).display !== 'none')")
    assert browser.execute_script(shown)[0] is True  # participant summary unfolded
    folded = [i for i, on in enumerate(browser.execute_script(shown)) if not on]
    assert folded, "the provenance panel starts folded"
    buttons = browser.find_elements("css selector", ".accordion-button")
    browser.execute_script("arguments[0].click()", buttons[folded[0]])
    assert browser.execute_script(shown)[folded[0]] is True
    toggle = browser.find_element("css selector", "[data-bs-toggle='dropdown']")
    browser.execute_script("arguments[0].click()", toggle)
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('.dropdown-menu')).display") == "block"


def test_group_page_offline_and_links_to_subject(browser, pages, artifacts_dir):
    page = pages["group"]
    assert check_report(page) == []
    _assert_offline(_load(browser, page), page)
    assert browser.execute_script("return document.querySelectorAll('svg').length") >= 1
    width = browser.execute_script(
        "return document.querySelector('.group-figure svg').getBoundingClientRect().width")
    assert width > 100
    _full_screenshot(browser, artifacts_dir / "group.png")
    link = browser.find_element("css selector", "a.subject-report")
    link.click()
    time.sleep(0.5)
    assert browser.current_url == pages["subject"].as_uri()
    shutil.copy(page, artifacts_dir / "group.html")
