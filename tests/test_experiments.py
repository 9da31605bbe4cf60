"""The experiment commands on real mini data with frozen encoders: grids, skipped and failed
runs, ablation, comparison, sweeps (grid and Optuna) and continuing an interrupted study."""

import csv
import importlib.util
import json
import shutil

import pytest

from captag.cli import build_parser, main
from captag.config import RunConfig
from captag.experiments.grid import grid_points, one_at_a_time, parse_grid
from captag.experiments.runner import (RESULT_COLUMNS, SKIPPED_RANDOM, planned_weights, run_many,
                                       run_one)
from captag.experiments.study import ablate, compare, run_name, sweep, zoo_models
from captag.models.weights import plan_weights
from conftest import DATA, frozen_config, small_csv

FUSED = "tf_efficientnet_lite0+all-MiniLM-L6-v2"
HAS_REPORT = importlib.util.find_spec("captag.experiments.report") is not None


def read_results(out):
    with open(out / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == RESULT_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return small_csv(tmp_path_factory.mktemp("subset") / "s200.csv", 200)


@pytest.fixture(scope="module")
def base(subset, cache_dir):
    return frozen_config(cache_dir, csv=str(subset), images=str(DATA / "data"), epochs=3)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, subset, base):
    out = tmp_path_factory.mktemp("ablation")
    rows = ablate(subset, FUSED, out, base, predict_rows=32, verbose=False)
    return out, rows


def test_parse_grid_types_values_from_the_config():
    grid = parse_grid("batch_size=16,32,64 lr=1e-5,1e-4,1e-3 epochs=2,3,4")
    assert grid == {"batch_size": [16, 32, 64], "lr": [1e-5, 1e-4, 1e-3], "epochs": [2, 3, 4]}
    assert all(type(v) is int for v in grid["batch_size"])
    assert all(type(v) is float for v in grid["lr"])
    other = parse_grid("at_least_one=true,no image_encoder=tf_efficientnet_lite0 dropout=0")
    assert other == {"at_least_one": [True, False], "image_encoder": ["tf_efficientnet_lite0"],
                     "dropout": [0.0]}


@pytest.mark.parametrize("text, words", [
    ("batchsize=16,32", ["'batchsize=16,32'", "unknown option", "batch_size", "head_lr", "OPTION="]),
    ("batch_size 16,32", ["'batch_size'", "missing '='", "OPTION="]),
    ("lr=", ["'lr='", "empty value", "OPTION="]),
    ("lr=1e-4,,1e-3", ["'lr=1e-4,,1e-3'", "empty value"]),
    ("epochs=2,three", ["'epochs=2,three'", "'three' is not a valid int", "OPTION="]),
    ("epochs=2.5", ["not a valid int"]),
    ("at_least_one=maybe", ["not a valid bool"]),
    ("lr=1e-4 lr=1e-3", ["given twice"]),
    ("extra=1", ["unknown option"]),
    ("   ", ["Empty grid"]),
])
def test_parse_grid_errors_name_the_token_and_the_form(text, words):
    with pytest.raises(ValueError) as error:
        parse_grid(text)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_grid_points_and_one_at_a_time_counts():
    grid = parse_grid("batch_size=16,32,64 lr=1e-5,1e-4,1e-3 epochs=2,3,4")
    points = grid_points(grid)
    assert len(points) == 27 and len({tuple(p.values()) for p in points}) == 27
    base = {"batch_size": 16, "lr": 1e-4, "epochs": 3}
    around = one_at_a_time(grid, base)
    assert len(around) == 7 and around[0] == base
    assert sum(p == base for p in around) == 1
    assert all(sum(p[k] != base[k] for k in base) == 1 for p in around[1:])


def offline(name: str) -> bool:
    return plan_weights(name).offline


def test_offline_weights_and_the_zoo():
    assert offline("tf_efficientnet_lite0") and offline("all-MiniLM-L6-v2")
    assert not offline("resnet50") and not offline("bert-base-uncased")
    models = zoo_models()
    assert FUSED in models and "efficientnet_b3+tinybert" in models
    assert {"resnet50", "mobilenetv2_100", "huawei-noah/TinyBERT_General_4L_312D"} <= set(models)
    fused = [m for m in models if "+" in m and "tinybert" not in m]
    assert all(offline(m.split("+")[0]) and offline(m.split("+")[1]) for m in fused)


def test_planned_weights_of_a_config(tmp_path, base):
    assert planned_weights(base.update(model="fusion")) == "package"
    mixed = base.update(model="resnet50+all-MiniLM-L6-v2")
    assert planned_weights(mixed) == "image:none text:package"
    assert planned_weights(base.update(model="image-only", image_weights="none")) == "none"
    missing = base.update(model="image-only", image_weights=str(tmp_path / "nope.pth"))
    assert planned_weights(missing) == "missing"


def test_model_without_offline_weights_is_skipped_not_trained(tmp_path, base):
    cfg = base.update(model="efficientnet_b0+tinybert")
    rows = run_many([("b0-tinybert", "compare", cfg)], tmp_path, verbose=False)
    assert rows[0]["status"] == SKIPPED_RANDOM and rows[0]["weights"] == "none"
    assert rows[0]["f1_samples"] == "" and rows[0]["run_dir"] == ""
    assert rows[0]["parameters"] > 0 and rows[0]["within_budget"] is True  # sizes still listed
    assert not (tmp_path / "runs").exists()
    assert read_results(tmp_path)[0]["weights"] == "none"


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, base):
    configs = [("missing", "compare", base.update(csv=str(tmp_path / "nope.csv"), model="text-only")),
               ("resnet", "compare", base.update(model="resnet50"))]
    rows = run_many(configs, tmp_path, verbose=False)
    assert rows[0]["status"].startswith("failed: ") and "nope.csv" in rows[0]["status"]
    assert rows[1]["status"] == SKIPPED_RANDOM
    assert [r["run"] for r in read_results(tmp_path)] == ["missing", "resnet"]


def test_ablate_gives_three_ok_rows(ablation):
    out, rows = ablation
    assert [r["model"] for r in rows] == ["tf_efficientnet_lite0", "all-MiniLM-L6-v2", FUSED]
    assert all(r["status"] == "ok" and r["group"] == "ablation" and r["mode"] == "frozen"
               for r in rows), rows
    assert [r["weights"] for r in rows] == ["package", "package", "package"]
    fused = rows[2]
    assert fused["size_mb"] > rows[0]["size_mb"] and fused["size_mb"] > rows[1]["size_mb"]
    assert fused["predict_samples_per_second"] > 0 and fused["predict_seconds"] > 0
    assert 0 < fused["f1_samples"] <= 1 and fused["within_budget"] is True
    saved = read_results(out)
    assert [r["run"] for r in saved] == [r["run"] for r in rows]
    for row in rows:  # the runner keeps its speed apart from training's summary
        folder = out / "runs" / row["run"]
        assert (folder / "model.safetensors").exists()
        speed = json.loads((folder / "speed.json").read_text())
        assert speed["predict_samples_per_second"] == row["predict_samples_per_second"]
        assert "predict_samples_per_second" not in json.loads((folder / "summary.json").read_text())
    if HAS_REPORT:
        assert (out / "report.md").exists() and (out / "report.html").exists()


def test_compare_reuses_finished_runs_and_each_run_evaluates(ablation, tmp_path, base, subset,
                                                             capsys):
    out, ablation_rows = ablation
    shutil.copytree(out / "runs", tmp_path / "runs")
    rows = compare(subset, ["text-only", "tf_efficientnet_lite0"], tmp_path, base,
                   predict_rows=32, verbose=False)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[1]["train_seconds"] == ablation_rows[0]["train_seconds"]  # reused, not retrained
    assert len(read_results(tmp_path)) == 2
    few = small_csv(tmp_path / "few.csv", 40)
    capsys.readouterr()
    for row in rows:
        assert main(["-q", "evaluate", row["run_dir"], "--csv", str(few),
                     "--images", str(DATA / "data"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["n_samples"] == 40 and 0 < result["f1_samples"] <= 1


def test_a_folder_of_other_settings_is_not_reused(ablation, base):
    out, rows = ablation
    other = base.update(model="all-MiniLM-L6-v2", epochs=5)
    with pytest.raises(FileExistsError, match="epochs"):
        run_one(other, out, rows[1]["run"], "compare")


def test_sweep_ties_head_lr_and_an_interrupted_sweep_continues(tmp_path, base, subset):
    base = base.update(epochs=1)
    rows = sweep(subset, "all-MiniLM-L6-v2", "lr=1e-3,3e-3", tmp_path, base, predict_rows=16,
                 verbose=False)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [(r["lr"], r["head_lr"]) for r in rows] == [(1e-3, 1e-3), (3e-3, 3e-3)]
    first, second = (tmp_path / "runs" / r["run"] for r in rows)
    (first / "summary.json").unlink()           # killed after its last checkpoint
    shutil.rmtree(second / "checkpoints")      # killed before its first checkpoint
    (second / "summary.json").unlink()
    again = sweep(subset, "all-MiniLM-L6-v2", "lr=1e-3,3e-3", tmp_path, base, predict_rows=16,
                  verbose=False)
    assert [r["status"] for r in again] == ["ok", "ok"]
    assert again[0]["f1_samples"] == rows[0]["f1_samples"]
    assert all((d / "summary.json").exists() for d in (first, second))


def test_cli_sweep_with_optuna_trials(tmp_path, subset, cache_dir, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "optuna"
    assert main(["-q", "sweep", "--csv", str(subset), "--images", str(DATA / "data"),
                 "--model", "all-MiniLM-L6-v2", "--grid", "epochs=1,2 lr=1e-3,3e-3",
                 "--optuna", "2", "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    printed = capsys.readouterr().out
    rows = read_results(out)
    assert len(rows) == 2 and all(r["group"] == "optuna" and r["status"] == "ok" for r in rows)
    assert all(r["mode"] == "frozen" and r["lr"] == r["head_lr"] for r in rows)
    assert all((out / "runs" / r["run"] / "summary.json").exists() for r in rows)
    assert "f1_samples" in printed and rows[0]["run"] in printed


def test_cli_base_settings(tmp_path):
    from captag.cli import _study_config
    args = build_parser().parse_args(["study", "--out", str(tmp_path), "--lr", "0.01"])
    cfg = _study_config(args)
    assert (cfg.image_trainable, cfg.text_trainable, cfg.lr, cfg.head_lr) == (0, 0, 0.01, 0.01)
    assert (cfg.epochs, cfg.patience) == (50, 5)  # frozen heads train to convergence
    args = build_parser().parse_args(["study", "--out", str(tmp_path), "--epochs", "3"])
    assert (_study_config(args).epochs, _study_config(args).patience) == (3, 5)
    args = build_parser().parse_args(["ablate", "--model", FUSED, "--out", str(tmp_path),
                                      "--mode", "finetune", "--epochs", "2"])
    cfg = _study_config(args)
    assert (cfg.image_trainable, cfg.text_trainable, cfg.epochs) == (-1, -1, 2)
    assert run_name(cfg.update(model=FUSED)) == f"{FUSED}-finetune-bs32-lr{RunConfig().lr}-hlr{RunConfig().head_lr}-ep2"


def test_a_model_over_the_budget_is_listed_with_its_size_not_trained(tmp_path, base):
    cfg = base.update(model=FUSED)
    rows = run_many([("big", "compare", cfg)], tmp_path, verbose=False, max_mb=20)
    row = rows[0]
    assert row["status"].startswith("skipped: 50 MB model file, over the 20 MB budget")
    assert row["parameters"] == 26114194 and row["size_mb"] == pytest.approx(99.79, abs=0.01)
    assert row["model_file_mb"] == pytest.approx(49.9, abs=0.1) and row["within_budget"] is True
    assert row["weights"] == "package" and row["f1_samples"] == ""
    assert not (tmp_path / "runs").exists()


def test_sweeping_a_setting_outside_the_run_name_gives_distinct_runs(tmp_path):
    from captag.experiments.study import sweep_configs
    named = sweep_configs(RunConfig(), FUSED, [{"csra": 0.0}, {"csra": 0.1}, {"schedule": "cosine"}])
    names = [name for name, _, _ in named]
    assert len(set(names)) == 3 and names[1].endswith("-csra0.1") and names[2].endswith("-schedulecosine")


def test_the_study_trains_frozen_heads_to_convergence_and_adds_the_default_recipe():
    from captag.experiments.study import FROZEN, base_config, default_recipe
    base = base_config(None, "data.csv")
    assert (base.epochs, base.patience, base.image_trainable, base.text_trainable) == (50, 5, 0, 0)
    assert FROZEN["epochs"] == 50 and base.image_size == 224
    name, group, cfg = default_recipe(base.update(seed=3))
    assert group == "compare" and name.startswith("captag-default-fusion-")
    assert cfg == RunConfig(csv="data.csv", seed=3) and cfg.image_size == RunConfig().image_size
    assert run_name(base.update(model=FUSED)).endswith("-ep50-es5")
