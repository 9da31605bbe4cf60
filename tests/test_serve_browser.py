"""The web page in headless Chromium (Debian `chromium` and `chromium-driver`, with Selenium):
pick a photo from mini.csv, type its caption, press Enter, and see the labels that the API gives
for the same input; a refused upload shows the API's message. Skipped where they are missing."""

import shutil
import threading
import time

import httpx
import pytest

from captag.data import read_records
from captag.serve.app import create_app
from captag.serve.model import ServedModel
from captag.serve.server import bind
from conftest import DATA, MINI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def url(frozen_run):
    """The app served by uvicorn on a free loopback port, in a thread."""
    import uvicorn
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(ServedModel.load(frozen_run)),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.common.exceptions import WebDriverException
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium or chromedriver is missing "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,1600"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    except WebDriverException as error:
        pytest.skip(f"Chromium does not start here: {error.msg}")
    yield driver
    driver.quit()


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
