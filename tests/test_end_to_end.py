"""The README's main job on mini.csv, through the command line, with default settings."""

import csv
import json

import pytest

from captag.cli import main
from conftest import DATA, MINI
from test_training import person_baseline


@pytest.mark.slow
def test_readme_main_job(tmp_path, cache_dir, capsys):
    run = tmp_path / "mini"
    assert main(["-q", "train", "--csv", str(MINI), "--out", str(run),
                 "--cache-dir", str(cache_dir)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["within_budget"] and summary["val"]["n_samples"] == 200
    capsys.readouterr()
    assert main(["evaluate", str(run), "--csv", str(MINI), "--split", "val", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_samples"] == 200
    assert result["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=0.01)
    assert result["f1_samples"] > person_baseline(run) + 0.05
    out = tmp_path / "submission.csv"
    assert main(["-q", "predict", str(run), "--csv", str(DATA / "test_mini.csv"),
                 "--output", str(out)]) == 0
    assert len(list(csv.reader(out.open()))) == 501
