#!/usr/bin/env bash
# Makes the example pictures the README links (docs/images/), each the output of one segrs
# command, from the demo's run and the shared data (../shared/data or $SEGRS_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
B=target/release/segrs
DATA=${SEGRS_DATA:-../shared/data}
OUT=docs/images
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$OUT"

# Training curves and an overlay panel: segrs demo.
$B demo --out "$T/demo" >/dev/null
cp "$T/demo/curve.png" "$OUT/curve.png"
cp "$(ls "$T"/demo/overlays/*.png | head -1)" "$OUT/demo_overlay.png"

# eval semantic --plot: the demo model's predictions against its validation masks.
CLASSES=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['per_class']))" "$T/demo/metrics.json")
$B eval semantic --pred "$T/demo/predictions" --gt "$T/demo/val_data/masks" --classes "$CLASSES" \
    --plot "$T/semantic" >/dev/null
cp "$T/semantic/per_class_iou.png" "$T/semantic/confusion.png" "$OUT/"

# eval coco --plot: COCO128's ground truth against the test fixture's results.
$B eval coco --gt "$DATA/coco128_instances/annotations/instances_train2017.json" \
    --dt tests/fixtures/coco/coco128_results.json --plot "$T/coco" >/dev/null
cp "$T/coco/segm_pr.png" "$T/coco/segm_ap_by_size.png" "$OUT/"

# eval video --plot: DAVIS blackswan, each frame predicted by the previous frame's ground truth
# (the copy-the-last-mask baseline), which shows how J and F fall as the swan moves.
GT="$DATA/davis2016_vos_subset/Annotations/480p/blackswan"
mkdir -p "$T/video/blackswan"
prev=""
for f in $(ls "$GT"); do
    cp "$GT/${prev:-$f}" "$T/video/blackswan/$f"
    prev=$f
done
$B eval video --gt "$DATA/davis2016_vos_subset" --pred "$T/video" --plot "$T/video_plots" >/dev/null
cp "$T"/video_plots/blackswan_*.png "$OUT/video_jf.png"

# viz instances: COCO128 ground truth with anti-aliased class labels and contours.
$B viz instances --gt "$DATA/coco128_instances/annotations/instances_train2017.json" \
    --images "$DATA/coco128_instances/train2017" --max-images 1 --out "$T/instances" >/dev/null
cp "$(ls "$T"/instances/*.png | head -1)" "$OUT/instances.png"

ls -la "$OUT"
