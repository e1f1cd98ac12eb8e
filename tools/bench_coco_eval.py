#!/usr/bin/env python3
"""Benchmark: `segrs eval coco` against pycocotools and faster-coco-eval, same machine, one run.

Data sets:
  * COCO128 (../shared/data/coco128_instances) with the perturbed detections of
    tests/fixtures/coco/coco128_results.json (mask AP);
  * a synthetic set of N images x 20 detections (default 5000), polygon ground truth and RLE
    results, written to a temporary folder.

Each tool is timed end to end from the JSON files to the 12 numbers (loading, evaluate,
accumulate, summarize); the median of REPEATS runs. segrs runs as the CLI binary
(target/release/segrs), so its time includes process start and JSON parsing.

usage: python tools/bench_coco_eval.py [--images 5000] [--repeats 3] [--threads 2]
Prints a Markdown table; with --write, replaces the COCO section of BENCHMARKS.md.
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..")
SEGRS = os.path.join(REPO, "target", "release", "segrs")


def synthetic(n_images, dets_per_image, rng, folder):
    images, anns, results = [], [], []
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 11)]
    aid = 1
    for img_id in range(1, n_images + 1):
        h, w = 480, 640
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id}.jpg"})
        for _ in range(12):
            x, y = rng.uniform(0, w - 100), rng.uniform(0, h - 100)
            bw, bh = rng.uniform(10, 100), rng.uniform(10, 100)
            poly = [x, y, x + bw, y, x + bw * 0.8, y + bh, x, y + bh * 0.9]
            anns.append({"id": aid, "image_id": img_id, "category_id": int(rng.integers(1, 11)),
                         "segmentation": [[round(v, 2) for v in poly]], "area": bw * bh * 0.85,
                         "bbox": [x, y, bw, bh], "iscrowd": 0})
            aid += 1
    gt = {"images": images, "annotations": anns, "categories": cats}
    from pycocotools import mask as mu
    by_img = {}
    for a in anns:
        by_img.setdefault(a["image_id"], []).append(a)
    for img_id in range(1, n_images + 1):
        src = by_img[img_id]
        for k in range(dets_per_image):
            a = src[k % len(src)]
            dx, dy = rng.uniform(-5, 5, size=2)
            poly = [v + (dx if i % 2 == 0 else dy) for i, v in enumerate(a["segmentation"][0])]
            rle = mu.merge(mu.frPyObjects([poly], 480, 640))
            results.append({"image_id": img_id, "category_id": a["category_id"] if rng.random() > 0.1 else int(rng.integers(1, 11)),
                            "segmentation": {"size": [480, 640], "counts": rle["counts"].decode("ascii")},
                            "score": float(rng.random())})
    gt_path, dt_path = os.path.join(folder, "synth_gt.json"), os.path.join(folder, "synth_dt.json")
    json.dump(gt, open(gt_path, "w"))
    json.dump(results, open(dt_path, "w"))
    return gt_path, dt_path, len(results)


def time_pycocotools(gt_path, dt_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - t, list(ev.stats)


def time_faster(gt_path, dt_path):
    from faster_coco_eval import COCO, COCOeval_faster
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval_faster(gt, dt, "segm", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - t, list(ev.stats)


def time_segrs(gt_path, dt_path, threads, out_json):
    t = time.perf_counter()
    subprocess.run([SEGRS, "--threads", str(threads), "eval", "coco", "--gt", gt_path, "--dt", dt_path,
                    "--json", out_json], check=True, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    return dt, json.load(open(out_json))["stats"]


def median_of(fn, repeats):
    runs = [fn() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), runs[0][1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    tmp = tempfile.mkdtemp()
    sets = [("COCO128 (mask AP, 1069 detections)",
             os.path.join(REPO, "..", "shared", "data", "coco128_instances", "annotations", "instances_train2017.json"),
             os.path.join(REPO, "tests", "fixtures", "coco", "coco128_results.json"))]
    gt, dt, n = synthetic(a.images, 20, np.random.default_rng(0), tmp)
    sets.append((f"synthetic {a.images} images x 20 detections (mask AP, {n} detections)", gt, dt))
    rows = []
    for name, gt, dt in sets:
        tp, sp = median_of(lambda: time_pycocotools(gt, dt), a.repeats)
        tf, sf = median_of(lambda: time_faster(gt, dt), a.repeats)
        ts, ss = median_of(lambda: time_segrs(gt, dt, a.threads, os.path.join(tmp, "s.json")), a.repeats)
        diff = max(abs(x - y) for x, y in zip(ss, sp))
        rows.append(f"| {name} | {ts:.3f} s | {tp:.3f} s | {tf:.3f} s | {tp / ts:.1f}x | {tf / ts:.2f}x | {diff:.1e} |")
    import faster_coco_eval
    import pycocotools  # noqa: F401
    md = (f"`python tools/bench_coco_eval.py --images {a.images}`: end to end from JSON files to the 12 numbers, "
          f"median of {a.repeats} runs, {a.threads} thread(s) (faster-coco-eval {faster_coco_eval.__version__}).\n\n"
          "| data | segrs | pycocotools | faster-coco-eval | speed-up vs pycocotools | vs faster-coco-eval | max stats diff vs pycocotools |\n"
          "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(md)
    if a.write:
        path = os.path.join(REPO, "BENCHMARKS.md")
        text = open(path).read()
        b, e = "<!-- bench:coco:begin -->", "<!-- bench:coco:end -->"
        if b in text and e in text:
            text = text[:text.index(b)] + b + "\n" + md + text[text.index(e):]
            open(path, "w").write(text)


if __name__ == "__main__":
    main()
