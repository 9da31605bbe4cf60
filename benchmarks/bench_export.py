"""What each step of `captag export` costs in validation F1 and in size, for one run.

    python benchmarks/bench_export.py --run RUN_DIR [--data ../shared/datasets/comp5329]

On the run's validation split (its CSV, from config.yaml): the run folder's Predictor, then
exports with the whole vocabulary (fp32), the shrunk vocabulary (fp32), int8 text and head with
the image graph fp32, and int8 with each image quantisation (qdq, qoperator, dynamic). Prints a
markdown table (samples-F1, its change against the run and against the previous step, the
largest probability difference, folder MB) and writes benchmarks/results/export.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

STEPS = (  # name, export settings
    ("fp32, whole vocabulary", dict(shrink=False)),
    ("fp32, shrunk vocabulary", dict()),
    ("int8 text + head, image fp32", dict(int8=True, image_quant="fp32")),
    ("int8, image static QDQ", dict(int8=True, image_quant="qdq")),
    ("int8, image static QOperator", dict(int8=True, image_quant="qoperator")),
    ("int8, image dynamic", dict(int8=True, image_quant="dynamic")),
)


def validation_rows(predictor, cfg):
    from captag.data import read_records, resolve_image_dir
    val = set(predictor.load_split()[1])
    rows = [r for r in read_records(cfg.csv, predictor.labels.ids) if r.image_id in val]
    return rows, resolve_image_dir(cfg.csv, cfg.images)


def f1(predictor, rows, probs) -> float:
    from captag.evaluation.metrics import compute_metrics
    targets = predictor.labels.encode_many([r.labels for r in rows])
    return compute_metrics(targets, probs, predictor.threshold, predictor.at_least_one)["f1_samples"]


def measure(run: Path, tmp: Path) -> list[dict]:
    from captag.deploy import load_predictor
    from captag.deploy.export import export_run
    reference = load_predictor(run)
    rows, images = validation_rows(reference, reference.cfg)
    base = reference.predict_probs(rows, images, progress=False)
    results = [{"step": "run folder (PyTorch model, ONNX Runtime)", "f1_samples": f1(reference, rows, base),
                "max_prob_diff": 0.0, "folder_mb": None}]
    for name, settings in STEPS:
        folder = tmp / name.replace(" ", "_").replace(",", "").replace("+", "")
        try:
            export_run(run, folder, **settings)
        except Exception as error:  # a quantiser that fails on this graph is a result too
            results.append({"step": name, "error": f"{type(error).__name__}: {error}"})
            continue
        predictor = load_predictor(folder)
        probs = predictor.predict_probs(rows, images, progress=False)
        results.append({"step": name, "f1_samples": f1(predictor, rows, probs),
                        "max_prob_diff": float(np.abs(probs - base).max()),
                        "mean_prob_diff": float(np.abs(probs - base).mean()),
                        "folder_mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 2)})
    return results


def table(results: list[dict], n_rows: int) -> str:
    run_f1, previous = results[0]["f1_samples"], results[0]["f1_samples"]
    lines = [f"validation rows: {n_rows}", "",
             "| step | samples-F1 | vs run | vs previous step | max prob diff | folder MB |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['step']} | failed: {r['error'][:80]} | | | | |")
            continue
        lines.append(f"| {r['step']} | {r['f1_samples']:.4f} | {r['f1_samples'] - run_f1:+.4f} | "
                     f"{r['f1_samples'] - previous:+.4f} | {r['max_prob_diff']:.2g} | "
                     f"{r['folder_mb'] if r['folder_mb'] is not None else ''} |")
        previous = r["f1_samples"] if r["step"].startswith(("fp32", "int8 text")) else previous
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "export.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args.run, Path(tmp))
    from captag.deploy import load_predictor
    predictor = load_predictor(args.run)
    n_rows = len(validation_rows(predictor, predictor.cfg)[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "validation_rows": n_rows,
                                    "steps": results}, indent=1) + "\n")
    print(table(results, n_rows))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
