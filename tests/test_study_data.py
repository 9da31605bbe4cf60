"""The study commands on data other than COMP5329 (word labels: 4 of them, and 80), their
report in the run's own label names, and one study at a time per --out folder."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captag.cli import main
from captag.data import read_records
from captag.data.labels import LABEL_NAMES
from captag.experiments.runner import run_row, study_lock
from captag.runs import RunFolder
from conftest import DATA, MINI, frozen_config, small_csv
from test_sources import write_csv

FUSED = "tf_efficientnet_lite0+all-MiniLM-L6-v2"
TINY = ["--image-encoder", "tf_efficientnet_lite0", "--image-size", "64", "--epochs", "2",
        "--batch-size", "8", "--num-workers", "0", "--min-steps", "0"]
# COCO's supercategories of COMP5329's labels, as words
GROUP = {1: "person", **{i: "vehicle" for i in range(2, 10)},
         **{i: "outdoor" for i in (10, 11, 13, 14, 15)}, **{i: "animal" for i in range(16, 20)}}
RUN_FILES = ("config.yaml", "labels.json", "split.json", "thresholds.json", "summary.json",
             "metrics.csv", "model.safetensors")
# what only COMP5329 (or its 18 labels) may bring into a report
COMP5329_WORDS = ("COCO", "18 labels", "competition", "0.8966", "seed's published")


@pytest.fixture(scope="module")
def groups(tmp_path_factory) -> Path:
    """photo,title,tags with 4 word labels (person|vehicle...), images under --images."""
    rows = read_records(MINI)[:100]
    return write_csv(tmp_path_factory.mktemp("groups") / "groups.csv", ["photo", "title", "tags"],
                     [[r.image_id, r.caption, "|".join(sorted({GROUP[label] for label in r.labels}))]
                      for r in rows])


@pytest.fixture(scope="module")
def eighty(tmp_path_factory) -> Path:
    """image,text,labels with 80 word labels: COMP5329's names in these rows, and topics."""
    rows = read_records(MINI)[:180]
    topics = 80 - len({label for r in rows for label in r.labels})
    tags = [[LABEL_NAMES[label] for label in r.labels] + [f"topic {i % topics:02d}"]
            for i, r in enumerate(rows)]
    return write_csv(tmp_path_factory.mktemp("eighty") / "eighty.csv", ["image", "text", "labels"],
                     [[r.image_id, r.caption, "|".join(t)] for r, t in zip(rows, tags)])


def study_cli(command: str, data: Path, out: Path, cache_dir, *options: str) -> int:
    return main(["-q", command, "--data", str(data), "--images", str(DATA / "data"), "--out",
                 str(out), "--cache-dir", str(cache_dir), *TINY, *options])


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_report(out: Path, labels: list[str]) -> str:
    """The report names no COMP5329 thing, and its runs learned `labels`; report.md returned."""
    report = (out / "report.md").read_text()
    for name in ("report.md", "report.html"):
        page = (out / name).read_text()
        for word in COMP5329_WORDS:
            assert word not in page, (name, word)
    for row in results(out):
        if row["status"] == "ok":
            assert json.loads((Path(row["run_dir"]) / "labels.json").read_text())["ids"] == labels
    return report


@pytest.fixture(scope="module")
def compared(groups, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("compare")
    assert study_cli("compare", groups, out, cache_dir, "--image-column", "photo",
                     "--models", "text-only,image-only") == 0
    return out


def test_compare_on_word_labels_names_them_and_no_comp5329(compared, groups, cache_dir, capsys):
    rows = results(compared)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    report = check_report(compared, ["animal", "outdoor", "person", "vehicle"])
    assert "The runs learned 4 labels: animal, outdoor, person, vehicle." in report
    assert "held out from the training data" in report
    assert "![Per-class F1 of the top 2 compared models](plots/compare-per-class.png)" in report
    config = (Path(rows[0]["run_dir"]) / "config.yaml").read_text()
    assert "label_sep: '|'" in config and "text_column: title" in config
    # the same command again reuses both runs (the columns the reader found match)
    assert study_cli("compare", groups, compared, cache_dir, "--image-column", "photo",
                     "--models", "text-only,image-only") == 0
    again = results(compared)
    assert [r["train_seconds"] for r in again] == [r["train_seconds"] for r in rows], again


def test_sweep_and_ablate_on_word_labels(groups, tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    assert study_cli("sweep", groups, sweep, cache_dir, "--image-column", "photo",
                     "--model", "text-only", "--grid", "lr=1e-3,3e-3") == 0
    assert [r["status"] for r in results(sweep)] == ["ok", "ok"]
    check_report(sweep, ["animal", "outdoor", "person", "vehicle"])
    ablation = tmp_path / "ablate"
    assert study_cli("ablate", groups, ablation, cache_dir, "--image-column", "photo",
                     "--model", FUSED) == 0
    rows = results(ablation)
    assert [r["status"] for r in rows] == ["ok"] * 3 and rows[2]["model"] == FUSED
    report = check_report(ablation, ["animal", "outdoor", "person", "vehicle"])
    assert "## Best model per class" in report


@pytest.mark.slow
def test_the_study_on_word_labels(groups, tmp_path, cache_dir, monkeypatch):
    """The whole study's path (comparison, default recipe, sweep, ablation), on a short list of
    models, a one-option grid and a small default recipe, with the command line's data options."""
    import captag.experiments.study as study
    recipe = study.default_recipe

    def small_recipe(base):
        name, group, cfg = recipe(base)
        assert cfg.image_column == "photo" and cfg.images == str(DATA / "data")
        return name, group, cfg.update(image_size=64, epochs=1, batch_size=8, num_workers=0)

    monkeypatch.setattr(study, "zoo_models", lambda: [FUSED])
    monkeypatch.setattr(study, "default_recipe", small_recipe)
    monkeypatch.setattr(study, "SEED_GRID", "lr=1e-3,3e-3")
    monkeypatch.setattr(study, "SEED_BASE", {"lr": 1e-3})
    out = tmp_path / "study"
    assert study_cli("study", groups, out, cache_dir, "--image-column", "photo") == 0
    rows = results(out)
    assert {r["group"] for r in rows} == {"compare", "sweep", "ablation"}
    assert all(r["status"] == "ok" for r in rows), rows
    assert next(r for r in rows if r["run"].startswith("captag-default-"))["mode"] == "partial"
    check_report(out, ["animal", "outdoor", "person", "vehicle"])


def test_eighty_labels_plot_the_30_most_frequent_and_list_every_one(eighty, tmp_path,
                                                                     cache_dir):
    from PIL import Image
    out = tmp_path / "eighty"
    assert study_cli("compare", eighty, out, cache_dir, "--models", "text-only,image-only",
                     "--val-fraction", "0.3") == 0
    with open(eighty, newline="") as handle:
        labels = sorted({tag for row in csv.DictReader(handle) for tag in row["labels"].split("|")})
    assert len(labels) == 80
    report = check_report(out, labels)
    assert "The runs learned 80 labels" in report
    note = ": the 30 most frequent of 80 labels (by validation rows)"
    assert f"Per-class F1 of the top 2 compared models{note}" in report
    assert f"the best model ({results(out)[0]['run']}){note}" in report
    table = report.split("## Best model per class")[1]
    assert "| label | validation rows | precision | recall | F1 | AP |" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 2 + 80 and f"| {labels[-1]} |" in table and "| person |" in table
    for plot in ("compare-per-class.png", f"best-per-class-{results(out)[0]['run']}.png"):
        width, height = Image.open(out / "plots" / plot).size
        assert height < 2200, (plot, width, height)  # 30 labels, not 80


def test_a_second_study_into_a_held_folder_is_refused_at_once(tmp_path, capsys):
    out = tmp_path / "out"
    with study_lock(out):
        started = time.monotonic()
        assert main(["-q", "compare", "--data", str(tmp_path / "not-read.csv"), "--models",
                     "text-only", "--out", str(out)]) == 2
        assert time.monotonic() - started < 5
    error = capsys.readouterr().err
    assert f"another captag study is writing into {out}" in error and "--out" in error
    assert not (out / "results.csv").exists() and not (out / "runs").exists()
    with study_lock(out):  # released: the next one may have it
        pass


def test_a_run_folder_that_a_train_holds_is_not_removed(tmp_path, cache_dir):
    run = RunFolder(tmp_path / "runs" / "busy")
    with run.lock():
        (run.path / "config.yaml").write_text("being written\n")
        row = run_row(frozen_config(cache_dir, model="text-only"), tmp_path, "busy", "compare")
    assert row["status"].startswith("failed: another captag process is using"), row
    assert (run.path / "config.yaml").read_text() == "being written\n"


COMPARE = "import sys; from captag.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow
def test_two_compares_into_one_folder_at_once(tmp_path, cache_dir):
    """Issue 23, item 6: two compares started together into one --out. One is refused at once
    (exit 2, the folder named); every run folder the other reports is complete."""
    data = small_csv(tmp_path / "s120.csv", 120)
    out = tmp_path / "out"
    argv = [sys.executable, "-c", COMPARE, "compare", "-q", "--data", str(data), "--images",
            str(DATA / "data"), "--models", "text-only,image-only", "--out", str(out),
            "--cache-dir", str(cache_dir), *TINY]
    started = time.monotonic()
    logs = [(tmp_path / f"out{n}.txt", tmp_path / f"err{n}.txt") for n in range(2)]
    processes = [subprocess.Popen(argv, stdout=stdout.open("w"), stderr=stderr.open("w"))
                 for stdout, stderr in logs]
    ended = [None, None]
    while None in ended and time.monotonic() - started < 600:
        for number, process in enumerate(processes):
            if ended[number] is None and process.poll() is not None:
                ended[number] = time.monotonic() - started
        time.sleep(0.1)
    for process in processes:
        process.wait(timeout=60)
    outputs = [(stdout.read_text(), stderr.read_text()) for stdout, stderr in logs]
    codes = [process.returncode for process in processes]
    assert sorted(codes) == [0, 2], (codes, outputs)
    refused, ran = (0, 1) if codes[0] == 2 else (1, 0)
    error = outputs[refused][1]
    assert f"captag: error: another captag study is writing into {out}" in error, error
    printed = outputs[ran][0]
    rows = results(out)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    for row in rows:
        folder = Path(row["run_dir"])
        assert row["run"] in printed
        assert all((folder / name).is_file() for name in RUN_FILES), sorted(
            p.name for p in folder.iterdir())
        RunFolder(folder).check()
        if row["model"] == "text-only":
            assert (folder / "text_encoder" / "config.json").is_file()
    assert ended[refused] < ended[ran], ended  # refused while the other ran: it did not wait
