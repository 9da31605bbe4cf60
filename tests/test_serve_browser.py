"""The web page in headless Chromium (Debian `chromium` and `chromium-driver`, with Selenium):
pick a photo from mini.csv, type its caption, press Enter, and see the labels that the API gives
for the same input; a refused upload shows the API's message. Skipped where they are missing."""

import httpx
import pytest

from captag.data import read_records
from conftest import DATA, MINI, served


@pytest.fixture(scope="module")
def url(frozen_run):
    with served(frozen_run) as address:
        yield address


def submit(browser, path, caption: str) -> None:
    """Pick `path` in the page's file input, type the caption and press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    browser.find_element(By.ID, "image").send_keys(str(path))
    field = browser.find_element(By.ID, "caption")
    field.clear()
    field.send_keys(caption, Keys.ENTER)


@pytest.mark.slow
def test_the_page_shows_what_the_api_answers(url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    row = read_records(MINI)[5]
    path = DATA / "data" / row.image_id
    browser.get(url)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "image"
    submit(browser, path, row.caption)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#bars li"))
    shown = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#predicted li")]
    answer = httpx.post(url + "predict", files={"image": (row.image_id, path.read_bytes())},
                        data={"caption": row.caption}, timeout=60).json()
    assert shown == [label["name"] for label in answer["labels"]] and shown
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 18
    assert browser.find_element(By.ID, "preview").is_displayed()

    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    submit(browser, notes, row.caption)
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "error").text)
    refused = httpx.post(url + "predict", files={"image": ("notes.jpg", notes.read_bytes())},
                         data={"caption": row.caption}, timeout=60)
    assert browser.find_element(By.ID, "error").text == refused.json()["detail"]
