"""The web page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
upload an image, see the predicted class and the grid of neighbours; then pick a random image. On an index without
labels: the neighbours, and no class bar or class filter."""

from __future__ import annotations

import os

import pytest

from apitest_helpers import TOKEN
from bench.reliability.server import ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT_DIR = os.environ.get("SIMSEARCH_SCREENSHOT_DIR")


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--window-size=1360,1000", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_shows_prediction_and_neighbours(browser, index_copy, sample_png, fmnist_folder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    server = ServerProcess(index_copy, token=TOKEN, workers=1, threads=2, log_path=str(tmp_path / "server.log"))
    url = server.start().url
    try:
        browser.get(url + "/")
        from selenium.common.exceptions import StaleElementReferenceException

        wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # grids re-render
        browser.find_element(By.ID, "file").send_keys(str(sample_png))
        wait.until(EC.visibility_of_element_located((By.ID, "results")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .neighbor")) == 10)
        expected = fmnist_folder.class_names[fmnist_folder.labels[0]]
        label = browser.find_element(By.ID, "pred-label").text
        assert label in fmnist_folder.class_names
        first = browser.find_element(By.CSS_SELECTOR, "#grid .neighbor .lab").text
        assert first == f"1. {expected}"  # the sample itself is indexed and comes first
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"))
        assert not browser.find_element(By.ID, "error").is_displayed()
        out = SCREENSHOT_DIR or str(tmp_path)
        os.makedirs(out, exist_ok=True)
        browser.save_screenshot(os.path.join(out, "search.png"))

        # the class filter: every neighbour is of the chosen class (not the query's own)
        from selenium.webdriver.support.ui import Select

        other = next(name for name in fmnist_folder.class_names if name != expected)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#label-filter option")) > 1)
        Select(browser.find_element(By.ID, "label-filter")).select_by_value(other)  # re-runs the last query
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#grid .neighbor .lab").text == f"1. {other}")
        labels = [e.text.split(". ", 1)[1] for e in browser.find_elements(By.CSS_SELECTOR, "#grid .neighbor .lab")]
        assert len(labels) == 10 and set(labels) == {other}
        Select(browser.find_element(By.ID, "label-filter")).select_by_value("")  # re-runs it unfiltered
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#grid .neighbor .lab").text == f"1. {expected}")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "Query: "))

        browser.find_element(By.ID, "random").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "indexed image #"))

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(EC.visibility_of_element_located((By.ID, "error")))
        assert "not a recognised image format" in browser.find_element(By.ID, "error").text
    finally:
        server.stop()


def test_an_index_without_labels_shows_neighbours_and_no_class_bar(browser, unlabelled_index, photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    server = ServerProcess(unlabelled_index, workers=1, threads=2, log_path=str(tmp_path / "server.log"))
    url = server.start().url
    try:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(EC.text_to_be_present_in_element((By.ID, "index-info"), "no labels"))
        assert not browser.find_element(By.ID, "class-options").is_displayed()
        browser.find_element(By.ID, "file").send_keys(str(photos / "07.jpg"))
        wait.until(EC.visibility_of_element_located((By.ID, "results")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .neighbor")) == 10)
        assert not browser.find_element(By.ID, "prediction").is_displayed()
        first = browser.find_element(By.CSS_SELECTOR, "#grid .neighbor .lab").text
        assert first.startswith("1. #")  # an id where a labelled index shows the class
        assert browser.find_element(By.ID, "timings").text  # the timings stay, below the neighbours
        assert not browser.find_element(By.ID, "error").is_displayed()
    finally:
        server.stop()
