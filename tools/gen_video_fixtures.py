#!/usr/bin/env python3
"""Fixtures for `segrs eval video`: the DAVIS 2017 toolkit's J and F (davis2017-evaluation,
davis2017/metrics.py and utils.db_statistics, reproduced here from their published definitions),
computed on
  * the shared DAVIS 2016 blackswan sequence (../shared/data/davis2016_vos_subset) against
    predictions made by eroding, dilating, shifting and dropping the ground truth;
  * a small synthetic multi-object palette sequence with void pixels (stored in the repo).

Run with the reference venv:  /tmp/segrs-refenv/bin/python tools/gen_video_fixtures.py
Writes tests/fixtures/davis/{blackswan_pred/blackswan/*.png, synth_gt/*, synth_pred/*, expected.json}.
"""
import json
import os
import shutil

import cv2
import numpy as np
from PIL import Image

from reference_metrics import f_measure

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "davis")
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "davis2016_vos_subset", "Annotations", "480p")


def db_eval_iou(annotation, segmentation, void_pixels=None):
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(segmentation).astype(bool)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    j = inters / np.maximum(union, 1e-30)
    if j.ndim == 0:
        j = 1 if np.isclose(union, 0) else j
    else:
        j[np.isclose(union, 0)] = 1
    return j


def db_statistics(per_frame_values):
    with np.errstate(all="ignore"):
        M = np.nanmean(per_frame_values)
        O = np.nanmean(per_frame_values > 0.5)
    N_bins = 4
    ids = np.round(np.linspace(1, len(per_frame_values), N_bins + 1) + 1e-10) - 1
    ids = ids.astype(np.uint8)
    D_bins = [per_frame_values[ids[i]:ids[i + 1] + 1] for i in range(0, 4)]
    with np.errstate(all="ignore"):
        D = np.nanmean(D_bins[0]) - np.nanmean(D_bins[3])
    return M, O, D


def evaluate(gt_frames, pred_frames, binary):
    """gt_frames, pred_frames: lists of 2-D uint arrays for every annotated frame."""
    masks = np.stack(gt_frames).astype(np.int64)
    if binary:
        masks = (masks == 255).astype(np.int64)
        void = np.zeros_like(masks, dtype=bool)
    else:
        void = masks == 255
        masks[void] = 0
    n_obj = int(np.max(masks[0]))
    gt = np.stack([masks == k for k in range(1, n_obj + 1)])[:, 1:-1]
    void = void[1:-1]
    res = np.stack(pred_frames).astype(np.int64)[1:-1]
    if binary:
        res[res == 255] = 1
    pr = np.stack([res == k for k in range(1, n_obj + 1)])
    out = []
    for k in range(n_obj):
        j = np.array([db_eval_iou(gt[k, f], pr[k, f], void[f]) for f in range(gt.shape[1])], dtype=float)
        fm = np.array([f_measure(pr[k, f], gt[k, f], void[f]) for f in range(gt.shape[1])], dtype=float)
        out.append({"object": k + 1, "J": list(db_statistics(j)), "F": list(db_statistics(fm))})
    return out


def save(arr, path, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(arr.astype(np.uint8))
    if palette:
        img = img.convert("P")
        pal = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
        pal[255 * 3: 255 * 3 + 3] = [224, 224, 192]
        img.putpalette(pal)
    img.save(path)


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    expected = {}
    # 1. blackswan (shared data): perturbed predictions.
    seq = "blackswan"
    names = sorted(os.listdir(os.path.join(SHARED, seq)))
    gts = [np.array(Image.open(os.path.join(SHARED, seq, n))) for n in names]
    preds = []
    kernel = np.ones((5, 5), np.uint8)
    for i, g in enumerate(gts):
        fg = (g == 255).astype(np.uint8)
        if i % 4 == 0:
            p = cv2.erode(fg, kernel, iterations=1 + i % 3)
        elif i % 4 == 1:
            p = cv2.dilate(fg, kernel, iterations=2)
        elif i % 4 == 2:
            p = np.roll(fg, (3 + i % 5, -4), axis=(0, 1))
        else:
            p = fg.copy() if i % 8 == 3 else np.zeros_like(fg)
        if i > 40:
            p = np.roll(p, (12, 20), axis=(0, 1))  # drifts late, so decay is positive
        p = (p > 0).astype(np.uint8) * 255
        preds.append(p)
        save(p, os.path.join(ROOT, "blackswan_pred", seq, names[i]))
    expected["blackswan"] = evaluate(gts, preds, binary=True)
    # 2. synthetic multi-object palette sequence with void.
    rng = np.random.default_rng(3)
    h, w = 70, 90
    gts, preds = [], []
    for f in range(9):
        g = np.zeros((h, w), np.uint8)
        g[10 + f:40 + f, 5 + 2 * f:35 + 2 * f] = 1
        yy, xx = np.mgrid[:h, :w]
        g[(yy - 45) ** 2 + (xx - 60 + f) ** 2 < 150] = 2
        if f != 4:
            g[50:60, 10 + f:20 + f] = 3
        edge = cv2.dilate((g > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) - (g > 0).astype(np.uint8)
        g[edge > 0] = 255  # DAVIS-style void band around objects
        p = g.copy()
        p[p == 255] = 0
        p = np.roll(p, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
        p[rng.random((h, w)) < 0.01] = rng.integers(0, 4)
        if f == 6:
            p[p == 3] = 0
        gts.append(g)
        preds.append(p)
        save(g, os.path.join(ROOT, "synth_gt", "synth", f"{f:05d}.png"), palette=True)
        save(p, os.path.join(ROOT, "synth_pred", "synth", f"{f:05d}.png"), palette=True)
    expected["synth"] = evaluate(gts, preds, binary=False)
    with open(os.path.join(ROOT, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
    print(json.dumps(expected)[:400])


if __name__ == "__main__":
    main()
