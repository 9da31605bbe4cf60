"""Run many configs into one study folder: a normal run folder and a results.csv row for each.

    OUT/runs/NAME/             one run folder per config (train, evaluate and predict work on it)
    OUT/runs/NAME/speed.json   its prediction speed, measured once
    OUT/results.csv            one row per config, rewritten after each run
    OUT/.lock                  held while a study writes OUT (`study_lock`)

A run folder that already holds summary.json is reused, so an interrupted study continues.
Models whose pretrained weights are not available offline are listed as skipped (weights
"none") unless random initialisation is asked for, and, given a size limit (max_mb), so are
models whose saved file would exceed it; skipped rows still give the model's size. A failed
run is recorded and the rest go on.
"""

from __future__ import annotations

import csv
import logging
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path

from captag.config import RunConfig
from captag.data import Data, DataOptions, LabelMap, load_split, read_data
from captag.data.sources import REMEMBERED
from captag.data.split import in_split_order
from captag.errors import RunFolderError
from captag.evaluation.speed import Timer, throughput
from captag.files import read_json, write_json
from captag.models.catalog import canonical_name, encoder_names
from captag.models.weights import (WeightsNotFoundError, WeightsPlan, describe_sources,
                                   plan_weights)
from captag.runs import RunFolder

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "run", "group", "model", "mode", "image_encoder", "text_encoder", "batch_size", "lr",
    "head_lr", "epochs", "f1_samples", "f1_micro", "f1_macro", "map", "f1_samples_at_0.5",
    "threshold", "train_seconds", "predict_seconds", "predict_samples_per_second", "size_mb",
    "model_file_mb", "within_budget", "parameters", "weights", "status", "run_dir"]
SKIPPED_RANDOM = "skipped: no pretrained weights offline"
RUNTIME_FIELDS = ("cache_dir", "num_workers", "accelerator", "devices")


def mode_of(cfg: RunConfig) -> str:
    if cfg.image_trainable == 0 and cfg.text_trainable == 0:
        return "frozen"
    if cfg.image_trainable == -1 and cfg.text_trainable == -1:
        return "finetune"
    return "partial"


def encoders(cfg: RunConfig) -> dict[str, tuple[str, str | None]]:
    """{"image"/"text": (encoder name, weights setting)} for the encoders the model uses."""
    image, text = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
    found = {"image": (image, cfg.image_weights)} if image else {}
    if text:
        found["text"] = (canonical_name(text), cfg.text_weights)
    return found


def weight_plans(cfg: RunConfig) -> dict[str, WeightsPlan]:
    """{"image"/"text": where that encoder's weights come from}, found without building it."""
    return {role: plan_weights(name, weights) for role, (name, weights) in encoders(cfg).items()}


def random_encoders(cfg: RunConfig) -> list[str]:
    """Roles ("image", "text") whose weights would have to come from the hub."""
    return [role for role, plan in weight_plans(cfg).items() if plan.kind == "hub"]


def planned_weights(cfg: RunConfig) -> str:
    """Where the weights would come from offline, in `describe_sources`' format (hub ones as
    none, a missing local file as missing)."""
    kinds = {}
    for role, (name, weights) in encoders(cfg).items():
        try:
            kinds[role] = plan_weights(name, weights).offline_kind
        except WeightsNotFoundError:
            kinds[role] = "missing"
    return describe_sources(kinds)


def _check_same_settings(run: RunFolder, cfg: RunConfig) -> None:
    """FileExistsError unless the run was trained with cfg's settings. The data's columns and
    label form that cfg leaves to the reader match whatever the run saved (what it found)."""
    saved, wanted = run.load_config().to_dict(), cfg.to_dict()
    for key in ("csv", "images"):
        for values in (saved, wanted):
            values[key] = str(Path(values[key]).resolve()) if values[key] else values[key]
    found = [k for k in REMEMBERED if wanted.get(k) is None]  # the reader found these
    differ = [k for k in wanted if k not in (*RUNTIME_FIELDS, *found) and saved.get(k) != wanted[k]]
    if differ:
        raise FileExistsError(f"{run.path} holds a run with other settings ({', '.join(differ)}); "
                              "use another --out folder or remove that run folder.")


@contextmanager
def study_lock(out_dir: str | Path):
    """Hold OUT/.lock while a compare, sweep, ablate or study writes OUT: a second one into the
    same folder gets RunFolderError at once, naming the folder, before any data is read."""
    out_dir = Path(out_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(RunFolder(out_dir).lock())
        except RunFolderError:
            raise RunFolderError(f"another captag study is writing into {out_dir}; wait for it to "
                                 "finish, or pass another --out folder.") from None
        yield out_dir


def _train(cfg: RunConfig, run: RunFolder, progress: bool) -> dict:
    from captag.training.trainer import train
    if (run.checkpoints / "last.ckpt").exists():
        try:
            return train(cfg, run.path, resume=True, progress=progress)
        except Exception as error:
            log.warning("Could not resume %s (%s); training it again from the start.",
                        run.path, " ".join(str(error).split())[:200])
    if run.path.exists():
        with run.lock():  # never the folder of a train that is running (RunFolderError)
            shutil.rmtree(run.path)  # an unfinished run: start it again
    return train(cfg, run.path, progress=progress)


def validation_records(run: RunFolder, cfg: RunConfig) -> tuple[Data, list]:
    """The run's data and its validation records, in the split's order."""
    _, val_ids = load_split(run.split)
    data = read_data(cfg.csv, DataOptions.of(cfg), known=LabelMap.load(run.labels))
    return data, in_split_order(data.records, val_ids)


_SPEEDS: dict[tuple, dict] = {}  # architecture -> speed; weights do not change it


def _architecture(cfg: RunConfig) -> tuple:
    used = encoders(cfg)
    return (used.get("image"), used.get("text"), cfg.image_size, cfg.max_length,
            cfg.csv, cfg.val_fraction, cfg.seed)


def measure_speed(run_dir: str | Path, predict_rows: int = 256) -> dict:
    """End-to-end prediction speed (images decoded, full model) on the first validation rows,
    after a short warm-up; predict_seconds extrapolates it to the whole validation split.

    Runs of the same architecture on the same data share one measurement per process."""
    cfg = RunFolder(run_dir).load_config()
    key = _architecture(cfg)
    if key not in _SPEEDS:
        _SPEEDS[key] = _measure_speed(run_dir, predict_rows)
    return dict(_SPEEDS[key])


def _measure_speed(run_dir: str | Path, predict_rows: int) -> dict:
    from captag.inference.predictor import Predictor
    predictor = Predictor(run_dir)
    cfg = predictor.cfg
    data, records = validation_records(predictor.run, cfg)
    sample = records[:predict_rows]
    image_dir = data.image_dir() if predictor.model.image is not None else None
    predictor.predict_probs(sample[:8], image_dir, num_workers=0, progress=False)  # warm-up
    with Timer() as timer:
        predictor.predict_probs(sample, image_dir, num_workers=cfg.num_workers, progress=False)
    rate = throughput(len(sample), timer.seconds)
    return {"predict_rows": len(sample), "predict_engine": predictor.engine,
            "predict_samples_per_second": round(rate, 2),
            "predict_seconds": round(len(records) / rate, 3) if rate else None}


def run_one(cfg: RunConfig, out_dir: str | Path, name: str, group: str,
            predict_rows: int = 256, progress: bool = False) -> dict:
    """Train (or reuse) OUT/runs/NAME, measure its prediction speed, and return its row."""
    run = RunFolder(Path(out_dir) / "runs" / name)
    if run.summary.exists():
        _check_same_settings(run, cfg)
        summary = read_json(run.summary, RunFolderError)
    else:
        summary = _train(cfg, run, progress)
    weights = summary.get("weights") or planned_weights(cfg)
    return result_row(cfg, name, group, "ok", {**summary, **run_speed(run, predict_rows)},
                      run.path, weights)


def run_speed(run: RunFolder, predict_rows: int = 256) -> dict:
    """The run's prediction speed from its speed.json, measured and written there once."""
    path = run.path / "speed.json"
    if path.exists():
        return read_json(path, RunFolderError)
    speed = measure_speed(run.path, predict_rows)
    write_json(path, speed)
    return speed


def result_row(cfg: RunConfig, name: str, group: str, status: str, summary: dict | None = None,
               run_dir: str | Path | None = None, weights: str | None = None) -> dict:
    """One results.csv row; metrics are empty without a summary."""
    summary = summary or {}
    val, half = summary.get("val", {}), summary.get("val_at_0.5", {})
    try:
        image, text = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
    except ValueError:
        image, text = None, None
    row = {
        "run": name, "group": group, "model": cfg.model, "mode": mode_of(cfg),
        "image_encoder": image or "", "text_encoder": text or "", "batch_size": cfg.batch_size,
        "lr": cfg.lr, "head_lr": cfg.head_lr, "epochs": cfg.epochs or "auto",
        **{k: round(val[k], 4) if k in val else "" for k in ("f1_samples", "f1_micro", "f1_macro", "map")},
        "f1_samples_at_0.5": round(half["f1_samples"], 4) if "f1_samples" in half else "",
        "threshold": round(summary["threshold"], 4) if "threshold" in summary else "",
        "size_mb": summary.get("parameter_mb_fp32", ""),
        "weights": weights if weights is not None else summary.get("weights", ""),
        "status": status, "run_dir": str(run_dir) if run_dir else "",
    }
    for key in ("train_seconds", "predict_seconds", "predict_samples_per_second", "model_file_mb",
                "within_budget", "parameters"):
        row[key] = summary.get(key, "")
    return {column: row[column] for column in RESULT_COLUMNS}


def planned_size(cfg: RunConfig) -> dict:
    """Size fields of a results row for a model not trained: parameters, fp32 MB, and the MB of
    its model file (saved in float16), counted without building it for real."""
    from captag.models.zoo import describe
    found = describe(cfg.model, image_encoder=cfg.image_encoder, text_encoder=cfg.text_encoder,
                     max_length=cfg.max_length)
    return {"parameters": found["parameters"], "parameter_mb_fp32": round(found["size_mb"], 2),
            "model_file_mb": round(found["file_mb"], 2), "within_budget": found["within_budget"]}


def over_budget_row(cfg: RunConfig, name: str, group: str, max_mb: float | None) -> dict | None:
    """A skipped row when the model's file would exceed max_mb (None or 0: no limit)."""
    if not max_mb:
        return None
    size = planned_size(cfg)
    if size["model_file_mb"] <= max_mb:
        return None
    status = (f"skipped: {size['model_file_mb']:.0f} MB model file, over the {max_mb:g} MB "
              "budget (--max-mb 0 trains it)")
    return result_row(cfg, name, group, status, summary=size, weights=planned_weights(cfg))


def run_row(cfg: RunConfig, out_dir: str | Path, name: str, group: str,
            include_random: bool = False, predict_rows: int = 256, progress: bool = False,
            max_mb: float | None = None) -> dict:
    """run_one, or a skipped row (no offline weights, or over max_mb), or a failed row."""
    try:
        random = random_encoders(cfg)
        if random and not include_random:
            return result_row(cfg, name, group, SKIPPED_RANDOM, summary=_safe_size(cfg),
                              weights=planned_weights(cfg))
        skipped = over_budget_row(cfg, name, group, max_mb)
        if skipped is not None:
            return skipped
        if random:
            cfg = cfg.update(**{f"{role}_weights": "none" for role in random})
        return run_one(cfg, out_dir, name, group, predict_rows, progress)
    except Exception as error:  # one failed run must not stop the others
        log.debug("run %s failed", name, exc_info=True)
        message = " ".join(str(error).split())[:500] or type(error).__name__
        run_dir = Path(out_dir) / "runs" / name
        return result_row(cfg, name, group, f"failed: {message}",
                          run_dir=run_dir if run_dir.exists() else None, weights=_safe_weights(cfg))


def _safe_size(cfg: RunConfig) -> dict:
    try:
        return planned_size(cfg)
    except Exception:  # an architecture that cannot be built offline: its size stays empty
        return {}


def _safe_weights(cfg: RunConfig) -> str:
    try:
        return planned_weights(cfg)
    except Exception:
        return ""


def write_results(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def run_many(configs: list[tuple[str, str, RunConfig]], out_dir: str | Path,
             include_random: bool = False, earlier_rows: list[dict] = (), predict_rows: int = 256,
             progress: bool = False, verbose: bool = True, max_mb: float | None = None) -> list[dict]:
    """Run each (name, group, cfg); results.csv holds earlier_rows and every row so far."""
    out_dir = Path(out_dir)
    rows: list[dict] = []
    for number, (name, group, cfg) in enumerate(configs, 1):
        row = run_row(cfg, out_dir, name, group, include_random, predict_rows, progress, max_mb)
        rows.append(row)
        write_results(out_dir / "results.csv", [*earlier_rows, *rows])
        if verbose:
            print(f"[{number}/{len(configs)}] {group} {name}: {short_result(row)}", flush=True)
    return rows


def short_result(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"]
    return (f"f1_samples {row['f1_samples']:.4f}  map {row['map']:.4f}  "
            f"{row['predict_samples_per_second']} samples/s  {row['size_mb']} MB")


def results_table(rows: list[dict]) -> str:
    """A short plain-text table of result rows."""
    columns = [("run", "run"), ("group", "group"), ("f1_samples", "f1_samples"), ("map", "map"),
               ("predict_samples_per_second", "samples/s"), ("size_mb", "MB"),
               ("weights", "weights"), ("status", "status")]
    cells = [[title for _, title in columns]]
    cells += [[_cell(key, row[key]) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def _cell(key: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if key in ("f1_samples", "map") else f"{value:.1f}"
    text = str(value)
    return text if key != "status" or len(text) <= 60 else text[:57] + "..."
