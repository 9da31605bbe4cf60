"""The `captag` command line: train, evaluate and predict (and the study commands on top)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

DEFAULT_CSV = "../shared/datasets/comp5329/mini.csv"


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", help="labelled CSV (ImageID,Labels,Caption)")
    p.add_argument("--images", help="image folder (default: data/ beside the CSV)")
    p.add_argument("--config", help="YAML file of settings; options given here override it")
    p.add_argument("--model", help="fusion, image-only, text-only, a timm or transformers name, or IMAGE+TEXT")
    p.add_argument("--image-encoder", help="timm image encoder (default tf_efficientnet_lite0)")
    p.add_argument("--text-encoder", help="transformers text encoder (default all-MiniLM-L6-v2)")
    p.add_argument("--weights", help="local weights file or folder for a one-encoder model")
    p.add_argument("--image-weights", help="image encoder weights: a file, 'hub' or 'none'")
    p.add_argument("--text-weights", help="text encoder weights: a folder, 'hub' or 'none'")
    p.add_argument("--image-trainable", type=int, help="top image stages to train (0 frozen, -1 all)")
    p.add_argument("--text-trainable", type=int, help="top text layers to train (0 frozen, -1 all)")
    p.add_argument("--freeze", action="store_true", help="freeze both encoders (train the head only)")
    p.add_argument("--finetune", action="store_true", help="train both encoders whole (GPU)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate of the encoders")
    p.add_argument("--head-lr", type=float, help="learning rate of the classifier head")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--image-size", type=int)
    p.add_argument("--skip-bad", action="store_true", default=None,
                   help="leave out rows whose image is missing or unreadable (listed in the run folder)")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/captag or $CAPTAG_CACHE)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--accelerator", help="cpu, gpu or auto")
    p.add_argument("--devices", help="number of devices, e.g. 2 for two GPUs (DDP)")
    p.add_argument("--precision", help="32-true, 16-mixed or bf16-mixed")


def _train_config(args):
    from captag.config import RunConfig
    from captag.models.registry import encoder_names
    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    if args.csv is None and not cfg.csv:
        args.csv = DEFAULT_CSV
    overrides = {name: getattr(args, name) for name in (
        "csv", "images", "model", "image_encoder", "text_encoder", "image_weights", "text_weights",
        "image_trainable", "text_trainable", "epochs", "batch_size", "lr", "head_lr", "seed",
        "val_fraction", "image_size", "skip_bad", "cache_dir", "num_workers", "accelerator",
        "devices", "precision")}
    cfg = cfg.update(**overrides)
    if args.freeze:
        cfg = cfg.update(image_trainable=0, text_trainable=0)
    if args.finetune:
        cfg = cfg.update(image_trainable=-1, text_trainable=-1)
    if args.weights:
        image, text = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
        if image and text:
            raise ValueError("--weights is for one-encoder models; for a fused model use "
                             "--image-weights and --text-weights.")
        cfg = cfg.update(**{"image_weights" if image else "text_weights": args.weights})
    return cfg


def cmd_train(args) -> int:
    from captag.training.trainer import train
    if args.resume:
        summary = train(None, args.resume, resume=True, progress=not args.quiet)
        out = args.resume
    else:
        if not args.out:
            raise ValueError("Pass --out RUN_DIR: the folder that will hold the run.")
        summary = train(_train_config(args), args.out, progress=not args.quiet)
        out = args.out
    if summary:
        val = summary["val"]
        print(f"run folder: {out}\nvalidation f1_samples {val['f1_samples']:.4f}  "
              f"f1_micro {val['f1_micro']:.4f}  f1_macro {val['f1_macro']:.4f}  map {val['map']:.4f}"
              f"  (threshold {summary['threshold']:.3f})\ntrain time {summary['train_seconds']:.0f} s, "
              f"model {summary['model_file_mb']:.1f} MB")
    return 0


def cmd_evaluate(args) -> int:
    from captag.inference.evaluate import evaluate_run
    result = evaluate_run(args.run_dir, args.csv, args.images, args.batch_size,
                          args.num_workers, args.engine, progress=not (args.quiet or args.json),
                          split=args.split)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['n_samples']} samples, threshold {result['threshold']:.3f}")
    for key in ("f1_samples", "f1_micro", "f1_macro", "map"):
        print(f"  {key:<11} {result[key]:.4f}")
    print(f"  {result['samples_per_second']:.1f} samples/s ({result['engine']}), "
          f"model {result['model_mb']:.1f} MB")
    print("\nlabel  name            support  precision  recall  f1")
    for row in result["per_class"]:
        print(f"{row['label']:>5}  {row['name']:<14} {row['support']:>8}  {row['precision']:.3f}"
              f"      {row['recall']:.3f}   {row['f1']:.3f}")
    return 0


def cmd_predict(args) -> int:
    from captag.inference.evaluate import predict_run
    result = predict_run(args.run_dir, args.csv, args.output, args.images, args.batch_size,
                         args.num_workers, args.engine, progress=not args.quiet)
    print(f"wrote {result['rows']} predictions to {result['output']} "
          f"({result['samples_per_second']:.1f} samples/s)")
    return 0


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by captag train")
    p.add_argument("--csv", required=True)
    p.add_argument("--images", help="image folder (default: data/ beside the CSV)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--engine", choices=["auto", "onnx", "torch"], default="auto")


def cmd_models(args) -> int:
    from captag.models.zoo import zoo_table
    rows = zoo_table(args.kind)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':<48} {'kind':<6} {'parameters':>12} {'fp32 MB':>8} {'file MB':>8}  budget"
          "  weights")
    for row in rows:
        budget = "yes" if row["within_budget"] else "NO"
        print(f"{row['name']:<48} {row['kind']:<6} {row['parameters']:>12,} {row['size_mb']:>8.1f}"
              f" {row['file_mb']:>8.1f}  {budget:<6}  {row['weights']}")
    return 0


def _add_study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", help="labelled CSV (ImageID,Labels,Caption)")
    p.add_argument("--images", help="image folder (default: data/ beside the CSV)")
    p.add_argument("--config", help="YAML file of base settings; options given here override it")
    p.add_argument("--mode", choices=["frozen", "finetune"],
                   help="frozen encoders (default) or encoders trained whole (GPU)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate of encoders and head alike")
    p.add_argument("--seed", type=int)
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/captag or $CAPTAG_CACHE)")
    p.add_argument("--out", required=True, help="study folder: results.csv, report, runs/")
    p.add_argument("--include-random", action="store_true",
                   help="also train models without pretrained weights offline (randomly initialised)")


def _study_config(args):
    import yaml
    from captag.config import RunConfig
    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    given = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    mode = args.mode or ("file" if {"image_trainable", "text_trainable"} & set(given) else "frozen")
    if mode != "file":
        trainable = 0 if mode == "frozen" else -1
        cfg = cfg.update(image_trainable=trainable, text_trainable=trainable)
    if args.csv is None and not cfg.csv:
        args.csv = DEFAULT_CSV
    return cfg.update(csv=args.csv, images=args.images, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, head_lr=args.lr, seed=args.seed,
                      cache_dir=args.cache_dir)


def _study_run(args, function, *positional, **keywords) -> int:
    from captag.experiments.runner import results_table
    cfg = _study_config(args)
    rows = function(cfg.csv, *positional, args.out, cfg, include_random=args.include_random,
                    progress=not args.quiet, **keywords)
    print(f"\n{results_table(rows)}\n\nresults: {Path(args.out) / 'results.csv'}")
    return 0


def cmd_compare(args) -> int:
    from captag.experiments.study import compare
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ValueError("Pass --models as a comma-separated list, e.g. image-only,text-only,fusion.")
    return _study_run(args, compare, models)


def cmd_sweep(args) -> int:
    from captag.experiments.study import sweep
    return _study_run(args, sweep, args.model, args.grid, optuna_trials=args.optuna)


def cmd_ablate(args) -> int:
    from captag.experiments.study import ablate
    return _study_run(args, ablate, args.model)


def cmd_study(args) -> int:
    from captag.experiments.study import study
    return _study_run(args, study, max_mb=args.max_mb)


def _add_study_commands(sub) -> None:
    p = sub.add_parser("compare", help="train several models with the same settings")
    _add_study_options(p)
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("sweep", help="train one model over a grid of settings")
    _add_study_options(p)
    p.add_argument("--model", required=True)
    p.add_argument("--grid", required=True,
                   help='e.g. "batch_size=16,32,64 lr=1e-5,1e-4,1e-3 epochs=2,3,4"')
    p.add_argument("--optuna", type=int, metavar="N", help="N Optuna (TPE) trials instead of every point")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("ablate", help="a fused model IMAGE+TEXT against each encoder alone")
    _add_study_options(p)
    p.add_argument("--model", required=True, help="IMAGE+TEXT")
    p.set_defaults(func=cmd_ablate)
    p = sub.add_parser("study", help="the seed's study: comparison, three sweeps and ablation")
    _add_study_options(p)
    p.add_argument("--max-mb", type=float, default=100.0,
                   help="list but do not train models whose model file (float16) would exceed "
                        "this many MB (default: the seed's 100 MB budget; 0: train every model)")
    p.set_defaults(func=cmd_study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model into a run folder")
    _add_train_options(p)
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="score a run on labelled rows")
    _add_inference_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--split", choices=["val", "train"],
                   help="score only the run's validation (or training) rows of the CSV")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="write a Kaggle submission")
    _add_inference_options(p)
    p.add_argument("--output", required=True, help="CSV to write (ImageID,Labels)")
    p.set_defaults(func=cmd_predict)
    _add_study_commands(sub)
    p = sub.add_parser("models", help="the model zoo: sizes, budget and where weights come from")
    p.add_argument("--kind", choices=["image", "text", "fused"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        if args.verbose:
            raise
        print(f"captag: error: {error}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="torch.onnx")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
