"""The command line on a finished run folder: evaluate and predict round trips, and errors."""

import csv
import json

import pytest

from captag.cli import main
from captag.data import LABEL_IDS, load_split, read_records
from conftest import DATA, MINI


def test_evaluate_json_from_the_run_folder_alone(run_copy, capsys):
    assert main(["evaluate", str(run_copy), "--csv", str(MINI), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("f1_samples", "f1_micro", "f1_macro", "map", "n_samples", "seconds",
                "samples_per_second", "model_mb"):
        assert key in result, key
    assert result["n_samples"] == 1000
    assert 0.3 < result["f1_samples"] <= 1.0
    assert result["model_mb"] < 100


def test_evaluate_on_validation_rows_matches_training(run_copy, tmp_path, capsys):
    _, val_ids = load_split(run_copy / "split.json")
    records = {r.image_id: r for r in read_records(MINI)}
    val_csv = tmp_path / "val.csv"
    val_csv.write_text("ImageID,Labels,Caption\n" + "".join(
        f'{i},{" ".join(map(str, records[i].labels))},"{records[i].caption}"\n' for i in val_ids))
    assert main(["evaluate", str(run_copy), "--csv", str(val_csv),
                 "--images", str(DATA / "data"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((run_copy / "summary.json").read_text())
    assert result["n_samples"] == 200
    assert result["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=0.01)


def test_predict_writes_a_submission(run_copy, tmp_path):
    out = tmp_path / "submission.csv"
    assert main(["-q", "predict", str(run_copy), "--csv", str(DATA / "test_mini.csv"),
                 "--output", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["ImageID", "Labels"]
    assert [r[0] for r in rows[1:]] == [r.image_id for r in read_records(DATA / "test_mini.csv")]
    for _, labels in rows[1:]:
        ids = [int(x) for x in labels.split()]
        assert ids and set(ids) <= set(LABEL_IDS)


def test_evaluate_needs_labels(run_copy, capsys):
    code = main(["evaluate", str(run_copy), "--csv", str(DATA / "test_mini.csv")])
    assert code == 2 and "predict" in capsys.readouterr().err


def test_not_a_run_folder(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path), "--csv", str(MINI)])
    assert code == 2 and "not a finished captag run folder" in capsys.readouterr().err


def test_bad_csv_line_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text('ImageID,Labels,Caption\n0.jpg,1,"ok"\n1.jpg,12,"twelve"\n')
    code = main(["train", "--csv", str(bad), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and ":3" in err and "1.jpg" in err


def test_unknown_config_option_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epochz: 3\n")
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert code == 2 and "epochz" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_created_is_a_clean_error(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code = main(["train", "--csv", str(MINI), "--out", str(blocker / "run"), "--freeze"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("captag: error:") and "file.txt" in err


def test_a_bug_keeps_its_traceback_and_a_user_error_does_not(tmp_path, monkeypatch, capsys):
    import captag.inference.evaluate as evaluate

    def broken(*args, **kwargs):
        raise MemoryError("out of memory")
    monkeypatch.setattr(evaluate, "evaluate_run", broken)
    with pytest.raises(MemoryError):  # not turned into a one-line "user error"
        main(["evaluate", str(tmp_path), "--csv", str(MINI)])
    monkeypatch.undo()
    assert main(["evaluate", str(tmp_path), "--csv", str(MINI)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-v", "evaluate", str(tmp_path), "--csv", str(MINI)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_config_that_is_not_yaml_is_named(tmp_path, capsys):
    for name, content in (("list.yaml", b"- 1\n- 2\n"), ("bin.yaml", bytes(range(256))),
                          ("bad.yaml", b"epochs: [3\n")):
        (tmp_path / name).write_bytes(content)
        code = main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and name in err and "Traceback" not in err


def test_evaluate_at_another_image_size_scores_the_larger_images(run_copy, capsys):
    def scores(*extra):
        assert main(["evaluate", str(run_copy), "--csv", str(MINI), "--split", "val", "--json",
                     *extra]) == 0
        return json.loads(capsys.readouterr().out)
    trained, larger = scores(), scores("--image-size", "288")
    assert (trained["image_size"], larger["image_size"]) == (224, 288)
    assert larger["engine"] == "torch" and larger["n_samples"] == trained["n_samples"]
    assert larger["f1_samples"] != trained["f1_samples"] or larger["map"] != trained["map"]


@pytest.mark.parametrize("extra, named", [(["--image-size", "16"], "image_size"),
                                          (["--image-size", "288", "--engine", "onnx"], "--engine")])
def test_a_bad_image_size_for_evaluate_is_named(run_copy, capsys, extra, named):
    assert main(["evaluate", str(run_copy), "--csv", str(MINI), *extra]) == 2
    assert named in capsys.readouterr().err
