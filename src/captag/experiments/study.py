"""The study commands: compare models, sweep settings (grid or Optuna), ablate a fused model,
and the seed's whole study (comparison, three sweeps, ablation) in one call.

Each writes OUT/results.csv (one row per run, runs in OUT/runs/) and then the report, holding
OUT/.lock throughout: a second one into the same OUT is refused at once.
Runs are named from their settings, so the same settings in two parts share one run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from captag.config import RunConfig
from captag.data import DataOptions
from captag.data.tables import data_file
from captag.errors import CaptagError
from captag.evaluation.size import BUDGET_MB
from captag.experiments.grid import grid_points, one_at_a_time, parse_grid
from captag.experiments.runner import mode_of, run_many, run_row, study_lock, write_results
from captag.models import catalog
from captag.models.weights import plan_weights

log = logging.getLogger(__name__)

SEED_GRID = "batch_size=16,32,64 lr=1e-5,1e-4,1e-3 epochs=2,3,4"
SEED_BASE = {"batch_size": 16, "lr": 1e-4, "epochs": 3}
# frozen encoders: the head trains on cached features (seconds an epoch) until validation
# samples-F1 stops rising, up to 50 epochs; at 224 px (ImageNet's usual size), which halves
# the feature extraction of 320 px (the default recipe's row trains at 320)
FROZEN = dict(image_trainable=0, text_trainable=0, epochs=50, patience=5, image_size=224)
# the settings that say how to read the data (images, columns, label form, labels file...)
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataOptions)
                    if f.name in {g.name for g in dataclasses.fields(RunConfig)})


def base_config(base_cfg: RunConfig | None, csv) -> RunConfig:
    """The base settings with the CSV; without a base config, frozen encoders trained to
    convergence (FROZEN)."""
    cfg = base_cfg if base_cfg is not None else RunConfig(**FROZEN)
    return cfg.update(csv=str(csv) if csv else None)


def default_recipe(base: RunConfig) -> tuple:
    """(name, group, config) of `captag train`'s default recipe on the base's data, read the
    same way (its columns and label form), and with its min_steps, which bounds the epochs on
    small data."""
    data = {name: getattr(base, name) for name in DATA_FIELDS}
    cfg = RunConfig(csv=base.csv, cache_dir=base.cache_dir, seed=base.seed,
                    val_fraction=base.val_fraction, min_steps=base.min_steps, **data)
    return "captag-default-" + run_name(cfg), "compare", cfg


def run_name(cfg: RunConfig) -> str:
    """A folder name made of the model and the settings that studies vary."""
    model = cfg.model
    if model in ("fusion", "image-only", "text-only"):
        image, text = catalog.encoder_names(model, cfg.image_encoder, cfg.text_encoder)
        model = f"{model}-" + "+".join(n for n in (image, text) if n)
    stop = f"-es{cfg.patience}" if cfg.patience else ""
    return (f"{model.replace('/', '_')}-{mode_of(cfg)}-bs{cfg.batch_size}-lr{cfg.lr:g}"
            f"-hlr{cfg.head_lr:g}-ep{cfg.epochs or 'auto'}{stop}")


def with_point(cfg: RunConfig, point: dict) -> RunConfig:
    """The config at a grid point; a swept lr sets head_lr too, so it means the same frozen or not."""
    values = dict(point)
    if "lr" in values and "head_lr" not in values:
        values["head_lr"] = values["lr"]
    return cfg.update(**values)


def report(out, rows: list[dict], title: str, base: RunConfig | None = None) -> None:
    try:
        from captag.experiments.report import write_report
    except ImportError as error:
        log.warning("No report written (%s); the results are in %s", error, Path(out) / "results.csv")
        return
    write_report(Path(out), rows, title, comp5329=is_comp5329(base))


def is_comp5329(cfg: RunConfig | None) -> bool | None:
    """Whether the base's data is a COMP5329 file (None if that cannot be told): what the
    report goes by when no run folder has a labels.json to tell it."""
    if cfg is None or not cfg.csv:
        return None
    try:
        return data_file(cfg.csv, cfg.format)[1] == "comp5329"
    except (CaptagError, OSError):
        return None


def _options(kw: dict) -> dict:
    return {k: kw[k] for k in ("include_random", "predict_rows", "progress", "verbose") if k in kw}


def compare_configs(base: RunConfig, models: list[str], group: str = "compare") -> list:
    configs = [base.update(model=model) for model in models]
    return [(run_name(cfg), group, cfg) for cfg in configs]


def compare(csv, models: list[str], out, base_cfg: RunConfig | None = None, **options) -> list[dict]:
    """Train each model with the same base settings; one results row each."""
    with study_lock(out):
        base = base_config(base_cfg, csv)
        rows = run_many(compare_configs(base, models), out, **_options(options))
        report(out, rows, "Model comparison", base)
    return rows


NAMED = ("model", "batch_size", "lr", "head_lr", "epochs", "image_trainable", "text_trainable")


def sweep_configs(base: RunConfig, model: str, points: list[dict], group: str = "sweep") -> list:
    """(name, group, config) per point; a swept setting that run_name leaves out is added to
    the name (e.g. -dropout0.1), so that two points never share a run folder."""
    named = []
    for point in points:
        cfg = with_point(base.update(model=model), point)
        extra = "".join(f"-{key}{value:g}" if isinstance(value, float) else f"-{key}{value}"
                        for key, value in point.items() if key not in NAMED)
        named.append((run_name(cfg) + extra, group, cfg))
    return named


def sweep(csv, model: str, grid: str | dict, out, base_cfg: RunConfig | None = None,
          optuna_trials: int | None = None, around: dict | None = None, **options) -> list[dict]:
    """Train `model` over a grid: every point, one option at a time `around` a base, or Optuna."""
    grid = parse_grid(grid) if isinstance(grid, str) else grid
    base = base_config(base_cfg, csv)
    with study_lock(out):
        if optuna_trials:
            rows = optuna_sweep(base, model, grid, out, optuna_trials, **_options(options))
        else:
            points = one_at_a_time(grid, around) if around is not None else grid_points(grid)
            rows = run_many(sweep_configs(base, model, points), out, **_options(options))
        report(out, rows, f"Sweep of {model}", base)
    return rows


def _optuna():
    try:
        import optuna
    except ImportError:
        raise RuntimeError("--optuna needs the optuna package: pip install 'captag[study]' "
                           "(or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_sweep(base: RunConfig, model: str, grid: dict, out, trials: int,
                 include_random: bool = False, predict_rows: int = 256, progress: bool = False,
                 verbose: bool = True) -> list[dict]:
    """TPE search over the grid's values (categorical per option); each trial a normal run."""
    optuna = _optuna()
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed))
    rows: list[dict] = []

    def objective(trial) -> float:
        point = {name: trial.suggest_categorical(name, values) for name, values in grid.items()}
        [(name, group, cfg)] = sweep_configs(base, model, [point], group="optuna")
        row = run_row(cfg, out, name, group, include_random, predict_rows, progress)
        rows.append(row)
        write_results(Path(out) / "results.csv", rows)
        if verbose:
            print(f"[trial {trial.number + 1}/{trials}] {name}: {row['status']} "
                  f"{row['f1_samples']}", flush=True)
        return row["f1_samples"] if row["status"] == "ok" else math.nan

    study.optimize(objective, n_trials=trials)
    return rows


def ablate_configs(base: RunConfig, model: str) -> list:
    if "+" not in model:
        raise ValueError(f"ablate needs a fused model written IMAGE+TEXT, e.g. "
                         f"tf_efficientnet_lite0+all-MiniLM-L6-v2; got {model!r}.")
    image, text = catalog.encoder_names(model, base.image_encoder, base.text_encoder)
    return compare_configs(base, [image, text, model], group="ablation")


def ablate(csv, model: str, out, base_cfg: RunConfig | None = None, **options) -> list[dict]:
    """The fused model IMAGE+TEXT against IMAGE alone and TEXT alone, same settings."""
    base = base_config(base_cfg, csv)
    configs = ablate_configs(base, model)
    with study_lock(out):
        rows = run_many(configs, out, **_options(options))
        report(out, rows, f"Ablation of {model}", base)
    return rows


def zoo_models() -> list[str]:
    """The comparison, from the catalog: the image encoders whose weights a package ships, the
    text ones whose package is installed, the installed pairs fused, then the seed's models."""
    images = catalog.names("image", offline=True)
    texts = [name for name in catalog.names("text", offline=True) if plan_weights(name).offline]
    fused = [f"{i}+{t}" for i in images for t in texts if plan_weights(i).offline]
    return [*images, *texts, *fused, *catalog.names("image", seed=True),
            *catalog.names("text", seed=True), *catalog.SEED_FUSED]


def best_fused(rows: list[dict]) -> str | None:
    fused = [r for r in rows if r["status"] == "ok" and r["image_encoder"] and r["text_encoder"]]
    return max(fused, key=lambda r: r["f1_samples"])["model"] if fused else None


def study(csv, out, base_cfg: RunConfig | None = None, include_random: bool = False,
          max_mb: float | None = BUDGET_MB, **options) -> list[dict]:
    """The seed's study: (a) every model, and captag's default recipe, (b) three sweeps on the
    best fused model of the base's mode, (c) its ablation.

    Models whose saved model file would exceed `max_mb` (the seed's 100 MB budget by default)
    are listed with their size but not trained; max_mb None or 0 trains them too."""
    options = {**_options(options), "include_random": include_random}
    base = base_config(base_cfg, csv)
    with study_lock(out):
        runs = [*compare_configs(base, zoo_models()), default_recipe(base)]
        rows = run_many(runs, out, max_mb=max_mb, **options)
        model = best_fused([r for r in rows if r["mode"] == mode_of(base)])
        if model is None:
            log.warning("No fused model trained, so no sweeps and no ablation.")
        else:
            points = one_at_a_time(parse_grid(SEED_GRID), SEED_BASE)
            rows += run_many(sweep_configs(base, model, points), out, earlier_rows=rows, **options)
            rows += run_many(ablate_configs(base, model), out, earlier_rows=rows, **options)
        report(out, rows, "The seed's study", base)
    return rows
