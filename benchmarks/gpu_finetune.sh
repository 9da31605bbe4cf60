#!/usr/bin/env bash
# The whole fused model fine-tuned on train.csv on a GPU (256 px, bf16-mixed), then evaluated;
# prints training samples/s and the validation F1. One command, from the repository root:
#
#     bash benchmarks/gpu_finetune.sh
#
# Environment overrides (the CPU smoke test uses them to run it tiny):
#   CAPTAG_GPU_CSV      training CSV       (default ../shared/datasets/comp5329/train.csv)
#   CAPTAG_GPU_IMAGES   image folder       (default: data/ beside the CSV)
#   CAPTAG_GPU_OUT      run folder         (default runs/gpu_finetune; replaced)
#   CAPTAG_GPU_ARGS     extra `captag train` options, after the defaults so they win
#                       (e.g. "--devices 4 --strategy ddp", or "--accelerator cpu --epochs 1")
#   CAPTAG_GPU_INSTALL  0 to skip the pip installs
#   PYTHON              the interpreter (default python3)
set -euo pipefail

PYTHON=${PYTHON:-python3}
CSV=${CAPTAG_GPU_CSV:-../shared/datasets/comp5329/train.csv}
OUT=${CAPTAG_GPU_OUT:-runs/gpu_finetune}
IMAGES=()
[ -n "${CAPTAG_GPU_IMAGES:-}" ] && IMAGES=(--images "$CAPTAG_GPU_IMAGES")

if [ "${CAPTAG_GPU_INSTALL:-1}" != 0 ]; then
    "$PYTHON" -m pip install torch==2.14.1 torchvision==0.29.1
    "$PYTHON" -m pip install -e .
fi

rm -rf "$OUT"
# shellcheck disable=SC2086  # CAPTAG_GPU_ARGS is a list of options
"$PYTHON" -m captag.cli -q train --csv "$CSV" "${IMAGES[@]}" --out "$OUT" --finetune \
    --image-size 256 --precision bf16-mixed --accelerator gpu ${CAPTAG_GPU_ARGS:-}
"$PYTHON" -m captag.cli evaluate "$OUT" --csv "$CSV" "${IMAGES[@]}" --split val --json \
    > "$OUT/evaluate.json"

"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
evaluated = json.loads((run / "evaluate.json").read_text())
rows = len(json.loads((run / "split.json").read_text())["train"])
epochs = sum(1 for _ in (run / "metrics.csv").open()) - 1
rate = rows * epochs / max(summary["fit_seconds"], 1e-9)
print(f"train: {rows} rows x {epochs} epochs in {summary['fit_seconds']:.1f} s = "
      f"{rate:.1f} samples/s")
print(f"validation F1 (samples): {summary['val'].get('f1_samples', float('nan')):.4f} at train "
      f"end, {evaluated['f1_samples']:.4f} by evaluate ({evaluated['n_samples']:.0f} rows)")
EOF
