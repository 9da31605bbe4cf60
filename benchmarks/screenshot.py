"""A screenshot of the `captag serve` page with a prediction, for the README: docs/serve.png.

    python benchmarks/screenshot.py RUN_OR_EXPORT_DIR [--row 10] [--out docs/serve.png]

Starts `captag serve` on a free loopback port, opens the page in headless Chromium (Debian
`chromium` and `chromium-driver`, through Selenium), picks the photo of a mini.csv row, types its
caption, presses Enter and saves the page once the labels are drawn.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--window-size=900,1200", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


def capture(url: str, photo: Path, caption: str, out: Path) -> None:
    browser = chromium()
    try:
        browser.get(url)
        browser.find_element(By.ID, "image").send_keys(str(photo))
        browser.find_element(By.ID, "caption").send_keys(caption, Keys.ENTER)
        WebDriverWait(browser, 120).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#bars li"))
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 900, "height": height, "deviceScaleFactor": 1, "mobile": False})
        out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(out))
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a run folder or an exported one")
    parser.add_argument("--row", type=int, default=10, help="which mini.csv row to show")
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "serve.png"))
    args = parser.parse_args()
    from captag.data import read_records
    row = read_records(DATA / "mini.csv")[args.row]
    server = subprocess.Popen([sys.executable, "-m", "captag.cli", "serve", args.folder, "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        if "serving" not in line:
            raise SystemExit(f"captag serve did not start: {line}{server.stderr.read()[-2000:]}")
        capture(line.split(" at ")[1].split()[0], DATA / "data" / row.image_id, row.caption, Path(args.out))
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
