"""The two second tasks of benchmarks/make_tasks.py end to end (issue 23 item 4), on a few rows of
mini.csv and a tiny model: (a) an imagefolder of nested JPEGs and PNGs labelled with the COCO
supercategories as words, (b) a pandas-style photo,title,tags CSV of COCO names joined by '|'.

Each is trained, evaluated and predicted through the command line, exported, predicted from the
exported folder, served (FastAPI's TestClient) and shown in headless Chromium; the task's own
label names arrive at every step, and nothing served names COCO or 18 labels."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from captag.cli import main
from captag.data import read_records
from conftest import DATA, MINI, served
from test_your_data import TINY

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("supercategories", "tags")
TRAIN_ROWS, TEST_ROWS = 24, 12


def load_make_tasks():
    """benchmarks/make_tasks.py as a module (benchmarks/ is no package)."""
    path = ROOT / "benchmarks" / "make_tasks.py"
    spec = importlib.util.spec_from_file_location("make_tasks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_tasks_module = load_make_tasks()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict:
    """Both tasks built from mini.csv's first 24 rows (train) and 12 later rows whose labels the
    training rows hold (test), outside the repository."""
    records = read_records(MINI)
    train = records[:TRAIN_ROWS]
    learned = {label for record in train for label in record.labels}
    test = [r for r in records[TRAIN_ROWS:] if set(r.labels) <= learned][:TEST_ROWS]
    return make_tasks_module.make_tasks(tmp_path_factory.mktemp("tasks"), train, test, data=DATA)


def expected_names(task: str) -> list[str]:
    """The labels of the training rows, in the task's words, sorted (the run's labels.json)."""
    records = read_records(MINI)[:TRAIN_ROWS]
    words = (make_tasks_module.supercategories if task == "supercategories"
             else make_tasks_module.coco_names)
    return sorted({word for record in records for word in words(record.labels)})


@pytest.fixture(scope="module", params=TASKS)
def task(request, tasks) -> tuple[str, dict]:
    return request.param, tasks[request.param]


@pytest.fixture(scope="module")
def run(task, tmp_path_factory, cache_dir) -> Path:
    """A tiny fusion model trained on the task's train split."""
    name, spec = task
    out = tmp_path_factory.mktemp(f"run-{name}") / "run"
    assert main(["-q", "train", "--data", spec["train"], "--out", str(out), "--cache-dir",
                 str(cache_dir), *spec["options"], *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def export(run, tmp_path_factory) -> Path:
    out = run.parent / "export"
    assert main(["-q", "export", str(run), "--out", str(out)]) == 0
    return out


def predicted_names(task: str, path: Path) -> list[list[str]]:
    """Each row's predicted labels in a prediction file of the task (.jsonl or .csv)."""
    if task == "supercategories":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(row["file_name"].startswith("images/") for row in rows)
        return [row["labels"] for row in rows]
    rows = list(csv.DictReader(path.open(newline="")))
    assert list(rows[0]) == ["photo", "tags"] and rows[0]["photo"].startswith("photos/")
    return [row["tags"].split("|") for row in rows]


def output_name(task: str) -> str:
    return "predicted.jsonl" if task == "supercategories" else "predicted.csv"


def test_the_tasks_are_built_as_described(tasks):
    a, b = tasks["supercategories"], tasks["tags"]
    rows = [json.loads(line) for line in
            (Path(a["train"]) / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == TRAIN_ROWS and a["train_pngs"] == TRAIN_ROWS // 5
    words = {label for row in rows for label in row["labels"]}
    assert words == set(make_tasks_module.SUPERCATEGORIES)  # all four in mini.csv's first rows
    assert sum(row["file_name"].endswith(".png") for row in rows) == TRAIN_ROWS // 5
    assert all(row["file_name"].count("/") == 3 for row in rows)  # images/<d>/<d>/<id>
    assert all((Path(a["train"]) / row["file_name"]).is_file() for row in rows)
    header, *lines = list(csv.reader(Path(b["train"]).open(newline="")))
    assert header == ["photo", "title", "tags"] and len(lines) == TRAIN_ROWS
    assert any("|" in tags for _, _, tags in lines)
    assert all((Path(b["train"]).parent / photo).is_file() for photo, _, _ in lines)
    for spec in (a, b):  # outside the repository
        assert ROOT not in Path(spec["train"]).resolve().parents


def test_train_evaluate_and_predict_use_the_task_s_labels(task, run, capsys):
    name, spec = task
    names = expected_names(name)
    assert json.loads((run / "labels.json").read_text())["ids"] == names
    capsys.readouterr()
    assert main(["-q", "evaluate", str(run), "--data", spec["test"], "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_samples"] == TEST_ROWS and 0 <= scores["f1_samples"] <= 1
    out = run.parent / output_name(name)
    assert main(["-q", "predict", str(run), "--data", spec["test"], "--output", str(out)]) == 0
    labels = predicted_names(name, out)
    assert len(labels) == TEST_ROWS and all(labels)  # at least one label each
    assert {label for row in labels for label in row} <= set(names)


@pytest.mark.slow
def test_the_exported_folder_predicts_the_same_label_names(task, run, export):
    name, spec = task
    assert json.loads((export / "labels.json").read_text())["ids"] == expected_names(name)
    out = export.parent / f"exported-{output_name(name)}"
    assert main(["-q", "predict", str(export), "--data", spec["test"], "--output", str(out)]) == 0
    from_run = run.parent / output_name(name)
    if not from_run.exists():  # this test alone
        assert main(["-q", "predict", str(run), "--data", spec["test"], "--output",
                     str(from_run)]) == 0
    assert predicted_names(name, out) == predicted_names(name, from_run)


def first_test_row(spec: dict) -> tuple[Path, str]:
    """(the image file, the caption) of the task's first test row."""
    test = Path(spec["test"])
    if test.is_dir():
        row = json.loads((test / "metadata.jsonl").read_text().splitlines()[0])
        return test / row["file_name"], row["text"]
    photo, title, _ = list(csv.reader(test.open(newline="")))[1]
    return test.parent / photo, title


@pytest.mark.slow
def test_the_served_export_shows_the_task_s_labels_and_never_coco(task, export):
    from fastapi.testclient import TestClient

    from captag.serve.app import create_app
    from captag.serve.model import ServedModel
    name, spec = task
    names = expected_names(name)
    image, caption = first_test_row(spec)
    with TestClient(create_app(ServedModel.load(export))) as client:
        info = client.get("/info")
        assert [label["name"] for label in info.json()["labels"]] == names
        openapi = client.get("/openapi.json")
        description = openapi.json()["info"]["description"]
        assert f"{len(names)} labels" in description
        answer = client.post("/predict", files={"image": (image.name, image.read_bytes())},
                             data={"caption": caption}).json()
        assert set(answer["probabilities"]) == set(names)
        assert answer["labels"] and all(label["name"] in names for label in answer["labels"])
        page, script = client.get("/").text, client.get("/static/app.js").text
        for text in (openapi.text, info.text, page, script):
            assert "COCO" not in text and "18 labels" not in text
        assert "18" not in description and "18" not in page


@pytest.fixture
def url(export):
    with served(export) as address:
        yield address


@pytest.mark.slow
def test_the_page_shows_the_task_s_label_names(task, url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    name, spec = task
    names = expected_names(name)
    image, caption = first_test_row(spec)
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.ID, "label-count").text == str(len(names)))
    browser.find_element(By.ID, "image").send_keys(str(image))
    field = browser.find_element(By.ID, "caption")
    field.clear()
    field.send_keys(caption, Keys.ENTER)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#predicted li"))
    shown = browser.find_element(By.CSS_SELECTOR, "#predicted li").text
    assert shown in names
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == len(names)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "COCO" not in body and "18 labels" not in body
