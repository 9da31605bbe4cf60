"""The `captag` command line: train, evaluate and predict, the study commands, the model list, serve.

Settings are checked before anything heavy is imported, so a wrong value stops in well under a
second. captag's own errors print as one line (exit 2); anything else is a bug and shows its
traceback (exit 1). Results go to stdout, progress and messages to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from captag.config import (GRAPH_PRECISIONS, INT8, PREDICT_BATCH_SIZE, RUNTIMES, RunConfig, field_type,
                           suggest)
from captag.errors import CaptagError, ConfigError, TrainingInterrupted

DEFAULT_CSV = "../shared/datasets/comp5329/mini.csv"
# RunConfig fields that say how to read a dataset (evaluate, predict and data take them too)
DATA_SETTINGS = ("images", "format", "delimiter", "image_column", "text_column", "label_column",
                 "label_sep", "label_columns", "label_columns_prefix")
# RunConfig fields that the study commands choose themselves
STUDY_OWN = ("model", "image_trainable", "text_trainable")


class Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest option for a mistyped one."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            options = _option_strings(self)
            wrong = [w for w in message.split(":", 1)[1].split() if w.startswith("--")]
            hints = "".join(suggest(w.split("=")[0], options, 0.6) for w in wrong)
            message += hints
        super().error(message)


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of a parser and of its subcommands."""
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return found


def add_config_options(p: argparse.ArgumentParser, skip=(), only=None,
                       title: str = "settings (any RunConfig field; override --config)") -> None:
    """One option per RunConfig field (--batch-size for batch_size), typed from the field;
    `only` limits them to those fields. The data file's field, csv, is also --data."""
    group = p.add_argument_group(title)
    for f in dataclasses.fields(RunConfig):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        flags = ["--" + f.name.replace("_", "-")] + (["--data"] if f.name == "csv" else [])
        kind = field_type(f)
        help_text = f.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {f.default})"
        if kind is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(*flags, type=kind if kind in (int, float) else str, default=None,
                               metavar=f.name.upper(), help=help_text)


def data_options(args):
    """The data options given on the command line, checked as RunConfig checks them."""
    from captag.data import DataOptions
    given = {name: getattr(args, name, None) for name in (*DATA_SETTINGS, "skip_bad", "labels")}
    return DataOptions.of(RunConfig().update(**given))


def config_overrides(args) -> dict:
    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(RunConfig)}


def _base_config(args) -> RunConfig:
    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    cfg = cfg.update(**config_overrides(args))
    if not cfg.csv:
        cfg = cfg.update(csv=DEFAULT_CSV)
    return cfg


def _check_models(cfg: RunConfig) -> None:
    from captag.models.catalog import check_model
    check_model(cfg.model, cfg.image_encoder, cfg.text_encoder)


def _train_config(args) -> RunConfig:
    cfg = _base_config(args)
    if args.freeze and args.finetune:
        raise ConfigError("--freeze and --finetune contradict each other: pass one of them.")
    if args.freeze:
        cfg = cfg.update(image_trainable=0, text_trainable=0)
    if args.finetune:
        cfg = cfg.update(image_trainable=-1, text_trainable=-1)
    _check_models(cfg)
    if args.weights:
        from captag.models.registry import encoder_names
        image, text = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
        if image and text:
            raise ConfigError("--weights is for one-encoder models; for a fused model use "
                              "--image-weights and --text-weights.")
        cfg = cfg.update(**{"image_weights" if image else "text_weights": args.weights})
    return cfg


def cmd_train(args) -> int:
    if args.resume:
        if args.out or args.config:
            raise ConfigError("--resume RUN_DIR continues a run with its own settings: pass it "
                              "without --out or --config.")
        cfg, out = None, args.resume
    else:
        if not args.out:
            raise ConfigError("Pass --out RUN_DIR: the folder that will hold the run.")
        cfg, out = _train_config(args), args.out
    from captag.training.trainer import train
    route_lightning_logs()
    summary = train(cfg, out, resume=bool(args.resume), progress=not (args.quiet or args.json))
    if summary:
        emit(args, summary, train_lines(out, summary))
    return 0


def train_lines(out, summary: dict) -> list[str]:
    val = summary.get("val") or {}
    scores = ("no validation split: threshold 0.5, last epoch kept" if not val else
              f"validation f1_samples {val['f1_samples']:.4f}  f1_micro {val['f1_micro']:.4f}  "
              f"f1_macro {val['f1_macro']:.4f}  map {_number(val['map'])}  "
              f"(threshold {summary['threshold']:.3f})")
    return [f"run folder: {out}", scores,
            f"train time {summary['train_seconds']:.0f} s, model {summary['model_file_mb']:.1f} MB"]


def _number(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def emit(args, result: dict, lines: list[str]) -> None:
    """The result on stdout: JSON alone with --json, else the lines."""
    if getattr(args, "json", False):
        from captag.files import dumps
        print(dumps(result))
    else:
        print("\n".join(lines))


def _loader(args):
    """Opens RUN_DIR: an exported folder (torch-free) or a run folder (with --engine)."""
    from captag.deploy import is_export, load_predictor

    def load(path, image_size=None):
        runtimes = {"runtime": args.runtime, "precision": args.precision}
        if not is_export(path):
            return load_predictor(path, engine=args.engine, image_size=image_size, **runtimes)
        if image_size:
            raise ConfigError(f"--image-size is for run folders: the exported model in {path} "
                              "has a fixed image side.")
        return load_predictor(path, **runtimes)
    return load


def cmd_evaluate(args) -> int:
    options = data_options(args)
    from captag.inference.evaluate import evaluate_run
    result = evaluate_run(args.run_dir, args.csv, None, args.batch_size,
                          args.num_workers, args.engine, progress=not (args.quiet or args.json),
                          split=args.split, load=_loader(args), image_size=args.image_size,
                          options=options)
    emit(args, result, evaluate_lines(result))
    return 0


def evaluate_lines(result: dict) -> list[str]:
    width = max([len(_label(row)) for row in result["per_class"]] + [20])
    lines = [f"{result['n_samples']} samples, threshold {result['threshold']:.3f}"]
    lines += [f"  {key:<11} {_number(result[key])}"
              for key in ("f1_samples", "f1_micro", "f1_macro", "map")]
    lines += [f"  {result['samples_per_second']:.1f} samples/s ({result['engine']}), "
              f"model {result['model_mb']:.1f} MB", "",
              f"{'label':<{width}}  support  precision  recall  f1"]
    lines += [f"{_label(row):<{width}} {row['support']:>8}  {row['precision']:.3f}"
              f"      {row['recall']:.3f}   {row['f1']:.3f}" for row in result["per_class"]]
    return lines


def _label(row: dict) -> str:
    """A label as the per-class table names it: '3 car' for an ID with a name, else the name."""
    return row["name"] if str(row["label"]) == row["name"] else f"{row['label']:>2} {row['name']}"


def cmd_predict(args) -> int:
    options = data_options(args)
    from captag.inference.evaluate import predict_run
    result = predict_run(args.run_dir, args.csv, args.output, None, args.batch_size,
                         args.num_workers, args.engine, progress=not args.quiet,
                         load=_loader(args), options=options, probabilities=args.probabilities)
    print(f"wrote {result['rows']} predictions to {result['output']} "
          f"({result['samples_per_second']:.1f} samples/s)")
    return 0


def cmd_data(args) -> int:
    options = data_options(args)
    from captag.training.inspect import inspect_data, report_lines
    result = inspect_data(args.path, options, args.text_encoder, args.max_length, args.plot,
                          progress=not (args.quiet or args.json))
    emit(args, result, report_lines(result))
    return 0


def _add_data_command(sub) -> None:
    p = sub.add_parser("data", help="read a dataset as train would, check it and report on it")
    _common(p)
    p.add_argument("path", metavar="PATH", help="a data file or an imagefolder")
    p.add_argument("--plot", metavar="FILE", help="also draw the label counts as a PNG bar chart")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--text-encoder", default=RunConfig.text_encoder,
                   help="whose tokens the text lengths count (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=RunConfig.max_length,
                   help="tokens a model reads; longer texts are counted as cut (default: %(default)s)")
    add_config_options(p, only=(*DATA_SETTINGS, "skip_bad", "labels"), title="data options")
    p.set_defaults(func=cmd_data)


def cmd_export(args) -> int:
    from captag.deploy.export import export_run
    data = {name: getattr(args, name) for name in ("csv", *DATA_SETTINGS)}
    RunConfig().update(**data)  # checked before the run is read
    spec = export_run(args.run_dir, args.out, int8=args.int8, image_quant=args.image_quant,
                      shrink=not args.full_vocab, data=data)
    sizes = spec["sizes"]
    speed = spec["provenance"]["int8_speed"]
    kept = f" ({', '.join(f'{p} {k}' for p, k in speed['kept'].items())})" if speed else ""
    emit(args, spec, [f"exported {args.run_dir} to {args.out}{kept}: graphs "
                      f"{sizes['model_mb']:.1f} MB, {sizes['parameters']:,} parameters"])
    return 0


def cmd_models(args) -> int:
    from captag.models.zoo import zoo_table
    rows = zoo_table(args.kind)
    lines = [f"{'model':<48} {'kind':<6} {'parameters':>12} {'fp32 MB':>8} {'file MB':>8}  "
             "budget  weights"]
    lines += [f"{row['name']:<48} {row['kind']:<6} {row['parameters']:>12,} "
              f"{row['size_mb']:>8.1f} {row['file_mb']:>8.1f}  "
              f"{'yes' if row['within_budget'] else 'NO':<6}  {row['weights']}" for row in rows]
    emit(args, rows, lines)
    return 0


def _study_config(args) -> RunConfig:
    """The study's base settings: --mode sets both encoders frozen or trained whole (frozen
    unless a --config file sets the trainable stages); frozen runs train to convergence
    (study.FROZEN's epochs and patience, unless given); a given --lr sets head_lr too."""
    from captag.config import read_yaml
    from captag.experiments.study import FROZEN
    given = {**(read_yaml(args.config) if args.config else {}),
             **{k: v for k, v in config_overrides(args).items() if v is not None}}
    cfg = _base_config(args)
    mode = args.mode or ("file" if {"image_trainable", "text_trainable"} & set(given) else "frozen")
    if mode != "file":
        trainable = 0 if mode == "frozen" else -1
        cfg = cfg.update(image_trainable=trainable, text_trainable=trainable)
    if mode == "frozen":
        cfg = cfg.update(**{k: v for k, v in FROZEN.items() if k not in given})
    if args.lr is not None and args.head_lr is None:
        cfg = cfg.update(head_lr=args.lr)
    return cfg


def _study_run(args, function, *positional, **keywords) -> int:
    cfg = _study_config(args)
    from captag.experiments.runner import results_table
    route_lightning_logs()
    rows = function(cfg.csv, *positional, args.out, cfg, include_random=args.include_random,
                    progress=not args.quiet, verbose=not args.quiet, **keywords)
    print(f"\n{results_table(rows)}\n\nresults: {Path(args.out) / 'results.csv'}")
    return 0


def cmd_compare(args) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ConfigError("Pass --models as a comma-separated list, e.g. image-only,text-only,fusion.")
    from captag.models.catalog import check_model
    for model in models:
        check_model(model, RunConfig.image_encoder, RunConfig.text_encoder)
    from captag.experiments.study import compare
    return _study_run(args, compare, models)


def cmd_sweep(args) -> int:
    from captag.experiments.grid import parse_grid
    parse_grid(args.grid)  # a bad grid stops before any model is built
    from captag.experiments.study import sweep
    return _study_run(args, sweep, args.model, args.grid, optuna_trials=args.optuna)


def cmd_ablate(args) -> int:
    from captag.experiments.study import ablate
    return _study_run(args, ablate, args.model)


def cmd_study(args) -> int:
    from captag.experiments.study import study
    return _study_run(args, study, max_mb=args.max_mb)


def cmd_serve(args) -> int:
    from captag.serve.app import Settings
    from captag.serve.server import serve
    return serve(args.folder, args.host, args.port,
                 Settings(args.max_upload_mb, args.max_batch_wait_ms, args.max_batch_size),
                 verbose=args.verbose, runtime=args.runtime, precision=args.precision)


def _add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: a JSON API and a web page")
    _common(p)
    p.add_argument("folder", metavar="RUN_OR_EXPORT_DIR", help="a run folder or an exported one")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, "
                   "this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free one)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest request body, in MB (default: %(default)s)")
    p.add_argument("--max-batch-wait-ms", type=float, default=5.0,
                   help="how long a request may wait for others to share its batch (default: %(default)s)")
    p.add_argument("--max-batch-size", type=int, default=16,
                   help="most items in one model call (default: %(default)s)")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_serve)


def _common(p: argparse.ArgumentParser) -> None:
    """-q and -v, accepted after the command as well as before it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks and library logs")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="print only the result (no progress)")


def _add_study_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--config", help="YAML file of base settings; options given here override it")
    p.add_argument("--out", required=True, help="study folder: results.csv, report, runs/")
    p.add_argument("--mode", choices=["frozen", "finetune"],
                   help="frozen encoders (default) or encoders trained whole (GPU)")
    p.add_argument("--include-random", action="store_true",
                   help="also train models without pretrained weights offline (randomly initialised)")
    add_config_options(p, skip=STUDY_OWN)


def _add_study_commands(sub) -> None:
    p = sub.add_parser("compare", help="train several models with the same settings")
    p.add_argument("--models", required=True, help="comma-separated model names")
    _add_study_options(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("sweep", help="train one model over a grid of settings")
    p.add_argument("--model", required=True)
    p.add_argument("--grid", required=True,
                   help='e.g. "batch_size=16,32,64 lr=1e-5,1e-4,1e-3 epochs=2,3,4"')
    p.add_argument("--optuna", type=int, metavar="N", help="N Optuna (TPE) trials instead of every point")
    _add_study_options(p)
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("ablate", help="a fused model IMAGE+TEXT against each encoder alone")
    p.add_argument("--model", required=True, help="IMAGE+TEXT")
    _add_study_options(p)
    p.set_defaults(func=cmd_ablate)
    p = sub.add_parser("study", help="the seed's study: comparison, three sweeps and ablation")
    p.add_argument("--max-mb", type=float, default=100.0,
                   help="list but do not train models whose model file (float16) would exceed "
                        "this many MB (default: the seed's 100 MB budget; 0: train every model)")
    _add_study_options(p)
    p.set_defaults(func=cmd_study)


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("run_dir", help="a run folder written by captag train, or an exported folder")
    p.add_argument("--csv", "--data", dest="csv", required=True, metavar="PATH",
                   help="the data: a file or an imagefolder, read as the run's training data "
                        "was (its columns and label form), unless the options below say otherwise")
    add_config_options(p, only=DATA_SETTINGS, title="data options")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--engine", choices=["auto", "onnx", "torch"], default="auto")
    _add_runtime_options(p)


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the ONNX graphs (default: $CAPTAG_RUNTIME, else auto: the "
                        "fastest on this machine within tolerance of ONNX Runtime fp32, timed "
                        "once and remembered; openvino: pip install 'captag[openvino]')")
    p.add_argument("--precision", choices=GRAPH_PRECISIONS,
                   help="the graphs' precision (default: $CAPTAG_PRECISION, else auto; bf16: "
                        "OpenVINO, on a CPU with avx512_bf16 or AMX)")


def _add_train_command(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run folder")
    _common(p)
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--config", help="YAML file of settings; options given here override it")
    p.add_argument("--weights", help="local weights file or folder for a one-encoder model")
    p.add_argument("--freeze", action="store_true", help="freeze both encoders (train the head only)")
    p.add_argument("--finetune", action="store_true", help="train both encoders whole (GPU)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    add_config_options(p)
    p.set_defaults(func=cmd_train)


def _add_export_command(sub) -> None:
    p = sub.add_parser("export", help="write a run as a standalone ONNX model folder")
    _common(p)
    p.add_argument("run_dir", help="a run folder written by captag train")
    p.add_argument("--out", required=True, help="new folder to write")
    p.add_argument("--int8", nargs="?", const="auto", choices=INT8,
                   help="quantise the graphs to int8: auto (the default) keeps a graph fp32 where "
                        "that runs faster on this machine; all: every graph int8")
    p.add_argument("--image-quant", choices=["qoperator", "qdq", "dynamic", "fp32"],
                   default="qoperator", help="how --int8 treats the image graph (default: static, "
                                             "QOperator format, calibrated on 200 training images)")
    p.add_argument("--full-vocab", action="store_true",
                   help="keep the whole vocabulary (default: only the training captions' tokens)")
    p.add_argument("--json", action="store_true", help="print model.yaml as JSON")
    add_config_options(p, only=("csv", *DATA_SETTINGS),
                       title="where the run's training data is now (default: where it was)")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="captag", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train_command(sub)
    p = sub.add_parser("evaluate", help="score a run on labelled rows")
    _add_inference_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--split", choices=["val", "train"],
                   help="score only the run's validation (or training) rows of the CSV")
    p.add_argument("--image-size", type=int, help="score a run folder's model at this image "
                   "side instead of its training side (FixRes: train low, test high)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="write each row's predicted labels")
    _add_inference_options(p)
    p.add_argument("--output", required=True, help="file to write (.csv, .tsv or .jsonl): a "
                   "Kaggle submission (ImageID,Labels) for COMP5329 data, else each row's image "
                   "(or line) and its labels in the data's own form")
    p.add_argument("--probabilities", action="store_true",
                   help="write every label's probability instead of the labels")
    p.set_defaults(func=cmd_predict)
    _add_data_command(sub)
    _add_export_command(sub)
    _add_study_commands(sub)
    p = sub.add_parser("models", help="the model zoo: sizes, budget and where weights come from")
    _common(p)
    p.add_argument("--kind", choices=["image", "text", "fused"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    _add_serve_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_console(args.verbose)
    try:
        return args.func(args)
    except TrainingInterrupted as error:
        print(f"captag: {error}", file=sys.stderr)
        return error.exit_code
    except CaptagError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"captag: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("captag: interrupted", file=sys.stderr)
        return 130


NOISE = (".*eval mode at the start of training.*", ".*smaller than the logging interval.*",
         ".*does not have many workers.*", ".*TracerWarning.*", ".*litlogger.*", ".*litmodels.*")


def route_lightning_logs() -> None:
    """Lightning gives its loggers handlers of their own when imported, so that each of its
    lines printed twice; its lines go through captag's one handler instead."""
    import lightning  # noqa: F401  (adds those handlers)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def configure_console(verbose: bool) -> None:
    """Library logs once each (not twice), and at normal verbosity only warnings and errors,
    without vendor tips or library progress bars."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # libraries that set their own loggers to INFO stay quiet
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when the hub is imported
    if "transformers" in sys.modules:  # imported already (a Python session, tests)
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)


if __name__ == "__main__":
    sys.exit(main())
