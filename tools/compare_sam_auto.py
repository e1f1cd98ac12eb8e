#!/usr/bin/env python3
"""Full-size check of `segrs sam auto` against the official SamAutomaticMaskGenerator: the same
checkpoint (e.g. the random ViT-B that `cargo bench --bench sam` saves with SEGRS_BENCH_KEEP),
the same photo and settings; compares the records (count, boxes, RLE, area, scores) and times
both on the same machine and threads.

usage: compare_sam_auto.py CHECKPOINT PHOTO SEGRS_BINARY THREADS [extra segrs/AMG settings as
       key=value, e.g. pred_iou_thresh=0 stability_score_thresh=0.5]
Prints a Markdown row; exit status 1 when the records differ.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
from PIL import Image


def main():
    ckpt, photo, segrs, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    settings = {}
    for kv in sys.argv[5:]:
        k, v = kv.split("=")
        settings[k] = int(v) if v.isdigit() else float(v)
    torch.set_num_threads(threads)
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    sd = torch.load(ckpt)
    variant = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}[sd["image_encoder.patch_embed.proj.weight"].shape[0]]
    sam = sam_model_registry[variant]()
    sam.load_state_dict(sd)
    sam.eval()
    image = np.array(Image.open(photo).convert("RGB"))
    gen = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings)
    t = time.perf_counter()
    with torch.inference_mode():
        ref = gen.generate(image)
    t_ref = time.perf_counter() - t
    out = tempfile.mkdtemp()
    args = [segrs, "--threads", str(threads), "sam", "auto", "--checkpoint", ckpt, "--image", photo, "--out", out]
    for k, v in settings.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    t = time.perf_counter()
    subprocess.run(args, check=True, stderr=subprocess.DEVNULL)
    t_segrs = time.perf_counter() - t
    got = json.load(open(os.path.join(out, "masks.json")))
    same = len(got) == len(ref)
    diffs = 0
    if same:
        for a, b in zip(got, ref):
            if a["segmentation"] != b["segmentation"] or a["bbox"] != b["bbox"] or a["area"] != b["area"]:
                diffs += 1
            elif abs(a["predicted_iou"] - b["predicted_iou"]) > 1e-4 or abs(a["stability_score"] - b["stability_score"]) > 1e-4:
                diffs += 1
    h, w = image.shape[:2]
    desc = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    print(f"| `sam auto`, {variant}, {os.path.basename(photo)} {w}x{h}, {desc} | {t_segrs:.1f} s | {t_ref:.1f} s | "
          f"{t_segrs / t_ref:.2f}x | {len(got)} vs {len(ref)} records, {diffs} differing |")
    sys.exit(0 if same and diffs == 0 else 1)


if __name__ == "__main__":
    main()
