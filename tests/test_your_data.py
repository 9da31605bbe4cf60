"""Train, evaluate and predict on datasets of other shapes than COMP5329, through the command
line: a CSV with word tags under other column names, and an imagefolder of nested PNGs."""

import csv
import json
from pathlib import Path

import pytest

from captag.cli import main
from test_sources import ROWS, copy_images, words, write_csv, write_jsonl

TINY = ["--image-encoder", "tf_efficientnet_lite0", "--image-size", "64", "--epochs", "2",
        "--batch-size", "4", "--num-workers", "0", "--freeze", "--min-steps", "0"]


def train(data: Path, out: Path, cache_dir, *options: str) -> dict:
    code = main(["-q", "train", "--data", str(data), "--out", str(out), "--cache-dir",
                 str(cache_dir), *TINY, *options])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture
def posters(tmp_path) -> Path:
    """Posters with a plot and genres, under column names captag does not guess."""
    paths = copy_images(tmp_path, "img")
    return write_csv(tmp_path / "posters.csv", ["poster", "plot", "genres"],
                     [[p, r.caption, ", ".join(words(r))] for p, r in zip(paths, ROWS)])


def test_a_csv_with_word_tags_trains_evaluates_and_predicts(posters, tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    train(posters, run, cache_dir, "--image-column", "poster", "--text-column", "plot",
          "--label-column", "genres")
    labels = json.loads((run / "labels.json").read_text())
    assert labels["ids"] == sorted({w for r in ROWS for w in words(r)})
    assert "label_sep: ','" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["-q", "evaluate", str(run), "--data", str(posters), "--split", "val"]) == 0
    table = capsys.readouterr().out
    assert "person" in table and "samples" in table
    out = tmp_path / "predicted.csv"
    assert main(["-q", "predict", str(run), "--data", str(posters), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["poster"] for row in rows] == [f"img/{r.image_id}" for r in ROWS]
    assert all(set(row["genres"].split(",")) <= set(labels["ids"]) for row in rows)
    assert all(row["genres"] for row in rows)  # at least one label each
    probs = tmp_path / "probs.csv"
    assert main(["-q", "predict", str(run), "--data", str(posters), "--output", str(probs),
                 "--probabilities"]) == 0
    header = next(csv.reader(probs.open()))
    assert header == ["poster", *labels["ids"]]


def test_an_imagefolder_of_nested_pngs(tmp_path, cache_dir):
    folder = tmp_path / "set"
    paths = copy_images(folder, "train/a/b", ".png")
    write_jsonl(folder / "metadata.jsonl", [{"file_name": p, "text": r.caption, "labels": words(r)}
                                            for p, r in zip(paths, ROWS)])
    run = tmp_path / "run"
    summary = train(folder, run, cache_dir)
    assert summary["val"]["f1_samples"] >= 0
    out = tmp_path / "predicted.jsonl"
    assert main(["-q", "predict", str(run), "--data", str(folder), "--output", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["file_name"] == paths[0] and isinstance(first["labels"], list)
    assert main(["-q", "evaluate", str(run), "--data", str(folder)]) == 0


def test_a_label_the_run_never_learned_stops_evaluate_not_predict(posters, tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    train(posters, run, cache_dir, "--image-column", "poster", "--text-column", "plot",
          "--label-column", "genres")
    other = write_csv(tmp_path / "other.csv", ["poster", "plot", "genres"],
                      [["img/9.jpg", "a plot", "person"], ["img/26.jpg", "a plot", "unicorn"]])
    capsys.readouterr()
    assert main(["-q", "evaluate", str(run), "--data", str(other)]) == 2
    error = capsys.readouterr().err
    assert "other.csv:3: column 'genres': the label 'unicorn' is not one the run learned" in error
    out = tmp_path / "predicted.csv"  # predict does not read the labels it is given
    assert main(["-q", "predict", str(run), "--data", str(other), "--output", str(out)]) == 0


def test_bad_rows_are_left_out_and_listed_in_the_run_folder(tmp_path, cache_dir, capsys):
    paths = copy_images(tmp_path)
    rows = [[p, r.caption, "|".join(words(r))] for p, r in zip(paths, ROWS)]
    rows[3][1] = ""
    data = write_csv(tmp_path / "d.csv", ["image", "text", "tags"], rows)
    assert main(["-q", "train", "--data", str(data), "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "d.csv:5: column 'text': a text is missing" in capsys.readouterr().err
    train(data, tmp_path / "run", cache_dir, "--skip-bad")
    assert json.loads((tmp_path / "run" / "bad_rows.json").read_text()) == [
        {"line": 5, "column": "text", "problem": "a text is missing"}]


def test_captag_data_reports_and_refuses_what_train_refuses(tmp_path, capsys):
    paths = copy_images(tmp_path)
    data = write_csv(tmp_path / "d.csv", ["image", "text", "tags"],
                     [[p, r.caption, "|".join(words(r))] for p, r in zip(paths, ROWS)])
    assert main(["-q", "data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_read"] == len(ROWS) and report["columns"]["labels"] == "tags"
    (tmp_path / paths[2]).unlink()
    assert main(["-q", "data", str(data)]) == 2
    assert f"{paths[2]}: missing" in capsys.readouterr().err
    assert main(["-q", "data", str(data), "--skip-bad"]) == 0
    assert "1 missing" in capsys.readouterr().out


def dataset_in(fmt: str, root: Path) -> Path:
    """The first ROWS as a dataset of format `fmt` in `root`, with their images."""
    paths = copy_images(root, "img", ".png" if fmt == "imagefolder" else ".jpg")
    rows = [{"image": p, "text": r.caption, "tags": words(r)} for p, r in zip(paths, ROWS)]
    if fmt in ("csv", "tsv"):
        return write_csv(root / f"d.{fmt}", ["image", "text", "tags"],
                         [[r["image"], r["text"], "|".join(r["tags"])] for r in rows],
                         "\t" if fmt == "tsv" else ",")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), root / "d.parquet")
        return root / "d.parquet"
    if fmt == "imagefolder":
        write_jsonl(root / "metadata.jsonl", [{"file_name": r["image"], "text": r["text"],
                                               "labels": r["tags"]} for r in rows])
        return root
    return write_jsonl(root / "d.jsonl", rows)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "imagefolder"])
def test_captag_data_reads_every_format(tmp_path, fmt, capsys):
    path = dataset_in(fmt, tmp_path)
    assert main(["-q", "data", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == fmt and report["rows_read"] == len(ROWS)
    assert report["images"]["found"] == len(ROWS)
    counts = {c["label"]: c["rows"] for c in report["labels"]["counts"]}
    assert counts["person"] == sum("person" in words(r) for r in ROWS)


@pytest.fixture(scope="module")
def posters_run(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """(a run, its data): a fusion model trained on posters with genres as words."""
    root = tmp_path_factory.mktemp("posters")
    paths = copy_images(root, "img")
    data = write_csv(root / "posters.csv", ["poster", "plot", "genres"],
                     [[p, r.caption, "|".join(words(r))] for p, r in zip(paths, ROWS)])
    train(data, root / "run", cache_dir, "--image-column", "poster", "--text-column", "plot",
          "--label-column", "genres")
    return root / "run", data


def test_the_python_api_predicts_the_rows_of_a_table(posters_run):
    from captag.data import DataOptions
    from captag.inference.predictor import Predictor
    run, data = posters_run
    predictor = Predictor.load(run)
    rows = list(csv.DictReader(data.open()))
    names = set(json.loads((run / "labels.json").read_text())["ids"])
    by_path = predictor.predict(str(data))
    assert len(by_path) == len(ROWS) and {l["name"] for r in by_path for l in r["labels"]} <= names
    rows_abs = [{**row, "poster": str(data.parent / row["poster"])} for row in rows]
    by_dicts = predictor.predict(rows_abs)
    assert [r["labels"] for r in by_dicts] == [r["labels"] for r in by_path]
    pandas = pytest.importorskip("pandas")
    by_frame = predictor.predict(pandas.DataFrame(rows_abs))
    assert [r["labels"] for r in by_frame] == [r["labels"] for r in by_path]
    renamed = [{"photo": row["poster"], "plot": row["plot"]} for row in rows_abs]
    with pytest.raises(Exception, match="'poster' is not a column"):
        predictor.predict(renamed)
    again = predictor.predict(renamed, options=DataOptions(image_column="photo"))
    assert [r["labels"] for r in again] == [r["labels"] for r in by_path]


def test_an_export_and_the_server_show_the_run_s_own_labels(posters_run, tmp_path):
    from fastapi.testclient import TestClient

    from captag.deploy.export import export_run
    from captag.deploy.runtime import ExportedPredictor
    from captag.inference.predictor import Predictor
    from captag.serve.app import create_app
    from captag.serve.model import ServedModel
    run, data = posters_run
    names = json.loads((run / "labels.json").read_text())["ids"]
    spec = export_run(run, tmp_path / "export")
    assert spec["data"]["image_column"] == "poster" and spec["data"]["label_sep"] == "|"
    exported = ExportedPredictor.load(tmp_path / "export")
    expected = [r["labels"] for r in Predictor.load(run).predict(str(data))]
    assert [r["labels"] for r in exported.predict(str(data))] == expected
    with TestClient(create_app(ServedModel.load(tmp_path / "export"))) as client:
        info = client.get("/info").json()
        assert [label["name"] for label in info["labels"]] == names
        description = client.get("/openapi.json").json()["info"]["description"]
        assert f"{len(names)} labels" in description and "COCO" not in description
        image = (data.parent / "img" / ROWS[0].image_id).read_bytes()
        answer = client.post("/predict", files={"image": ("a.jpg", image, "image/jpeg")},
                             data={"caption": ROWS[0].caption}).json()
        assert set(answer["probabilities"]) == set(names)
        assert all(label["id"] == label["name"] in names for label in answer["labels"])
        page = client.get("/").text
        assert "COCO" not in page and "18" not in page


def test_one_hot_columns_are_predicted_as_one_hot_columns(tmp_path, cache_dir):
    from captag.data.labels import LABEL_NAMES
    paths = copy_images(tmp_path, "scans")
    tags = {"tag_person": 1, "tag_car": 3, "tag_dog": 18}
    rows = [[p, r.caption, *[int(label in r.labels) for label in tags.values()]]
            for p, r in zip(paths, ROWS)]
    data = write_csv(tmp_path / "reports.tsv", ["image", "report", *tags], rows, "\t")
    train(data, tmp_path / "run", cache_dir, "--text-column", "report",
          "--label-columns-prefix", "tag_")
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["ids"] == sorted(
        LABEL_NAMES[i] for i in tags.values())
    out = tmp_path / "predicted.tsv"
    assert main(["-q", "predict", str(tmp_path / "run"), "--data", str(data), "--output",
                 str(out)]) == 0
    predicted = list(csv.DictReader(out.open(), delimiter="\t"))
    assert list(predicted[0]) == ["image", *tags]
    assert all(row[column] in ("0", "1") for row in predicted for column in tags)
