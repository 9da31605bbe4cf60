"""Shared pytest fixtures: the real data, a feature cache, a small trained run, headless
Chromium, and a model folder served over HTTP."""

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "comp5329"
MINI = DATA / "mini.csv"
# tests compare probabilities with ONNX Runtime fp32's; test_engines chooses runtimes itself
os.environ.setdefault("CAPTAG_RUNTIME", "onnxruntime")


def small_csv(path: Path, rows: int, source: Path = MINI) -> Path:
    """The header and first `rows` records of a real CSV, written to `path`."""
    from captag.data import read_records
    records = read_records(source)[:rows]
    lines = ["ImageID,Labels,Caption"] + [
        f'{r.image_id},{" ".join(map(str, r.labels))},"{r.caption}"' for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real COMP5329 data folder (read-only)."""
    assert DATA.is_dir(), f"The dataset must be at {DATA} (../shared beside the checkout)."
    return DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


def frozen_config(cache_dir, **overrides):
    from captag.config import RunConfig
    settings = dict(csv=str(MINI), image_trainable=0, text_trainable=0, epochs=8, head_lr=3e-3,
                    batch_size=32, image_size=224, image_encoder="tf_efficientnet_lite0",
                    cache_dir=str(cache_dir), num_workers=0)
    settings.update(overrides)
    return RunConfig().update(**settings)


@pytest.fixture(scope="session")
def frozen_run(tmp_path_factory, cache_dir) -> Path:
    """A fusion model with frozen encoders, trained on mini.csv (head only, cached features)."""
    from captag.training.trainer import train
    out = tmp_path_factory.mktemp("runs") / "frozen"
    train(frozen_config(cache_dir), out, progress=False)
    return out


@pytest.fixture
def run_copy(frozen_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(frozen_run, copy)
    return copy


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium (Debian `chromium` and `chromium-driver`); the test
    is skipped, with the reason, where they are missing."""
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


@contextmanager
def served(folder: Path):
    """The URL of `captag serve` of a run or exported folder: uvicorn on a free loopback port,
    in a thread."""
    import uvicorn

    from captag.serve.app import create_app
    from captag.serve.model import ServedModel
    from captag.serve.server import bind
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(ServedModel.load(folder)),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)
