#!/usr/bin/env python3
"""Fixtures for `segrs eval coco` and `segrs eval panoptic`, made with pycocotools and with
panopticapi's pq_compute (reproduced below from its published definition), on the shared data:

  * coco128_instances: ground truth against perturbed detections (jittered, dropped, duplicated,
    wrong class, detections over crowd regions, false positives), as compressed RLE results;
    COCOeval stats (segm and bbox) and per-category AP.
  * coco_panoptic_sample: ground truth against perturbed panoptic PNGs (segments shifted, dropped,
    merged, relabelled, a false positive, one over void).
  * RLE round trips: random masks of odd sizes, empty and full, encoded by pycocotools.

Run with the reference venv:  /tmp/segrs-refenv/bin/python tools/gen_coco_fixtures.py
Writes tests/fixtures/coco/ and tests/fixtures/panoptic/.
"""
import copy
import json
import sys
import tempfile
import os
import shutil

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from reference_metrics import mask_to_boundary

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def perturbed_detections(gt, rng):
    dets = []
    cat_ids = sorted(gt.getCatIds())
    for img_id in sorted(gt.getImgIds()):
        info = gt.loadImgs(img_id)[0]
        h, w = info["height"], info["width"]
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img_id]))
        for a in anns:
            m = gt.annToMask(a)
            if a.get("iscrowd", 0):
                # a detection over the crowd region (matched to crowd => ignored)
                dy, dx = rng.integers(-3, 4, size=2)
                m2 = np.roll(m, (dy, dx), axis=(0, 1))
                dets.append((img_id, a["category_id"], m2, float(rng.uniform(0.3, 0.9))))
                continue
            r = rng.random()
            if r < 0.12:
                continue  # dropped (false negative)
            dy, dx = rng.integers(-4, 5, size=2)
            m2 = np.roll(m, (dy, dx), axis=(0, 1))
            if rng.random() < 0.3:
                k = np.ones((3, 3), np.uint8)
                import cv2
                m2 = cv2.erode(m2, k) if rng.random() < 0.5 else cv2.dilate(m2, k)
            cat = a["category_id"]
            if rng.random() < 0.08:
                cat = int(rng.choice(cat_ids))  # wrong class
            dets.append((img_id, cat, m2, float(rng.uniform(0.05, 1.0))))
            if rng.random() < 0.1:
                dets.append((img_id, cat, np.roll(m2, (2, 2), axis=(0, 1)), float(rng.uniform(0.0, 0.5))))  # duplicate
        for _ in range(rng.integers(0, 3)):
            # false positive box-ish blob
            y0, x0 = rng.integers(0, max(1, h - 40)), rng.integers(0, max(1, w - 40))
            m2 = np.zeros((h, w), np.uint8)
            m2[y0:y0 + rng.integers(5, 40), x0:x0 + rng.integers(5, 40)] = 1
            dets.append((img_id, int(rng.choice(cat_ids)), m2, float(rng.uniform(0.0, 0.7))))
    out = []
    for img_id, cat, m, score in dets:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        bbox = mask_utils.toBbox(rle).tolist()
        out.append({"image_id": int(img_id), "category_id": int(cat), "segmentation":
                    {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "bbox": [float(v) for v in bbox], "score": round(score, 6)})
    return out


def coco_eval(gt_path, dt_path, iou_type):
    gt = COCO(gt_path)
    dt = gt.loadRes(dt_path)
    ev = BoundaryCOCOeval(gt, dt) if iou_type == "boundary" else COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_cat = []
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_cat.append({"category_id": int(cat), "ap": float(np.mean(p)) if p.size else -1.0})
    return {"stats": [float(s) for s in ev.stats], "per_category": per_cat}


class BoundaryCOCOeval(COCOeval):
    """Boundary AP: pycocotools' COCOeval with IoU = min(mask IoU, boundary IoU), as the
    boundary_iou_api's `iouType="boundary"` (dilation ratio 0.02)."""

    def __init__(self, gt, dt):
        super().__init__(gt, dt, "segm")

    def computeIoU(self, imgId, catId):
        p = self.params
        gt = self._gts[imgId, catId] if p.useCats else [_ for cId in p.catIds for _ in self._gts[imgId, cId]]
        dt = self._dts[imgId, catId] if p.useCats else [_ for cId in p.catIds for _ in self._dts[imgId, cId]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds]
        if len(dt) > p.maxDets[-1]:
            dt = dt[0:p.maxDets[-1]]
        g = [x["segmentation"] for x in gt]
        d = [x["segmentation"] for x in dt]
        iscrowd = [int(o["iscrowd"]) for o in gt]
        mask_ious = mask_utils.iou(d, g, iscrowd)
        gb = [mask_utils.encode(np.asfortranarray(mask_to_boundary(mask_utils.decode(x)))) for x in g]
        db = [mask_utils.encode(np.asfortranarray(mask_to_boundary(mask_utils.decode(x)))) for x in d]
        b_ious = mask_utils.iou(db, gb, iscrowd)
        if len(d) == 0 or len(g) == 0:
            return mask_ious
        return np.minimum(mask_ious, b_ious)


def coco_fixtures():
    d = os.path.join(FIX, "coco")
    os.makedirs(d, exist_ok=True)
    gt_path = os.path.join(SHARED, "coco128_instances", "annotations", "instances_train2017.json")
    gt = COCO(gt_path)
    rng = np.random.default_rng(0)
    dets = perturbed_detections(gt, rng)
    dt_path = os.path.join(d, "coco128_results.json")
    with open(dt_path, "w") as f:
        json.dump(dets, f)
    # bbox results: the same detections without segmentation
    bbox_path = os.path.join(d, "coco128_bbox_results.json")
    with open(bbox_path, "w") as f:
        json.dump([{k: v for k, v in x.items() if k != "segmentation"} for x in dets], f)
    expected = {"segm": coco_eval(gt_path, dt_path, "segm"), "bbox": coco_eval(gt_path, bbox_path, "bbox"),
                "boundary": coco_eval(gt_path, dt_path, "boundary")}
    with open(os.path.join(d, "coco128_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("segm", expected["segm"]["stats"][:3], "bbox", expected["bbox"]["stats"][:3],
          "boundary", expected["boundary"]["stats"][:3], len(dets), "detections")


def rle_fixtures():
    rng = np.random.default_rng(1)
    cases = []
    for (h, w) in [(1, 1), (7, 13), (31, 17), (64, 65), (3, 200)]:
        for kind in ["random", "empty", "full", "blobs"]:
            if kind == "random":
                m = (rng.random((h, w)) < 0.4).astype(np.uint8)
            elif kind == "empty":
                m = np.zeros((h, w), np.uint8)
            elif kind == "full":
                m = np.ones((h, w), np.uint8)
            else:
                m = np.zeros((h, w), np.uint8)
                m[h // 4: 3 * h // 4 + 1, w // 3: 2 * w // 3 + 1] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            cases.append({"h": h, "w": w, "mask_rowmajor": m.flatten().tolist(),
                          "counts": rle["counts"].decode("ascii"), "area": int(mask_utils.area(rle)),
                          "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    # a polygon rasterised by pycocotools
    poly = [[10.5, 10.2, 60.7, 15.1, 40.3, 70.9, 12.0, 50.5]]
    rles = mask_utils.frPyObjects(poly, 80, 90)
    prle = mask_utils.merge(rles)
    out = {"cases": cases, "polygon": {"points": poly, "h": 80, "w": 90, "counts": prle["counts"].decode("ascii"),
                                       "area": int(mask_utils.area(prle))}}
    with open(os.path.join(FIX, "coco", "rle_cases.json"), "w") as f:
        json.dump(out, f)


# ---- panoptic: panopticapi pq_compute, reproduced ----

OFFSET = 256 * 256 * 256
VOID = 0


def rgb2id(color):
    color = color.astype(np.int32)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(id_map):
    rgb = np.zeros(id_map.shape + (3,), dtype=np.uint8)
    m = id_map.copy()
    for i in range(3):
        rgb[..., i] = m % 256
        m //= 256
    return rgb


def pq_compute(gt_json, gt_folder, pred_json, pred_folder, categories):
    stats = {c: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0} for c in categories}
    pred_by_img = {a["image_id"]: a for a in pred_json["annotations"]}
    for gt_ann in gt_json["annotations"]:
        pred_ann = pred_by_img[gt_ann["image_id"]]
        pan_gt = rgb2id(np.array(Image.open(os.path.join(gt_folder, gt_ann["file_name"])), dtype=np.uint32))
        pan_pred = rgb2id(np.array(Image.open(os.path.join(pred_folder, pred_ann["file_name"])), dtype=np.uint32))
        gt_segms = {el["id"]: dict(el) for el in gt_ann["segments_info"]}
        pred_segms = {el["id"]: dict(el) for el in pred_ann["segments_info"]}
        pred_labels_set = set(el["id"] for el in pred_ann["segments_info"])
        labels, labels_cnt = np.unique(pan_pred, return_counts=True)
        for label, label_cnt in zip(labels, labels_cnt):
            if label not in pred_segms:
                if label == VOID:
                    continue
                raise KeyError("segment in PNG not in JSON")
            pred_segms[label]["area"] = label_cnt
            pred_labels_set.remove(label)
        assert not pred_labels_set
        pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
        gt_pred_map = {}
        labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
        for label, intersection in zip(labels, labels_cnt):
            gt_pred_map[(label // OFFSET, label % OFFSET)] = intersection
        gt_matched, pred_matched = set(), set()
        for (gt_label, pred_label), intersection in gt_pred_map.items():
            if gt_label not in gt_segms or pred_label not in pred_segms:
                continue
            if gt_segms[gt_label]["iscrowd"] == 1:
                continue
            if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
                continue
            union = pred_segms[pred_label]["area"] + gt_segms[gt_label]["area"] - intersection - gt_pred_map.get((VOID, pred_label), 0)
            iou = intersection / union
            if iou > 0.5:
                stats[gt_segms[gt_label]["category_id"]]["tp"] += 1
                stats[gt_segms[gt_label]["category_id"]]["iou"] += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)
        crowd_labels = {}
        for gt_label, gt_info in gt_segms.items():
            if gt_label in gt_matched:
                continue
            if gt_info["iscrowd"] == 1:
                crowd_labels[gt_info["category_id"]] = gt_label
                continue
            stats[gt_info["category_id"]]["fn"] += 1
        for pred_label, pred_info in pred_segms.items():
            if pred_label in pred_matched:
                continue
            intersection = gt_pred_map.get((VOID, pred_label), 0)
            if pred_info["category_id"] in crowd_labels:
                intersection += gt_pred_map.get((crowd_labels[pred_info["category_id"]], pred_label), 0)
            if intersection / pred_info["area"] > 0.5:
                continue
            stats[pred_info["category_id"]]["fp"] += 1

    def average(isthing):
        pq = sq = rq = 0.0
        n = 0
        per = {}
        for label, info in categories.items():
            if isthing is not None and (info["isthing"] == 1) != isthing:
                continue
            s = stats[label]
            tp, fp, fn, iou = s["tp"], s["fp"], s["fn"], s["iou"]
            if tp + fp + fn == 0:
                per[label] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pqc = iou / (tp + 0.5 * fp + 0.5 * fn)
            sqc = iou / tp if tp != 0 else 0
            rqc = tp / (tp + 0.5 * fp + 0.5 * fn)
            per[label] = {"pq": pqc, "sq": sqc, "rq": rqc}
            pq += pqc
            sq += sqc
            rq += rqc
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per

    res = {}
    for name, isthing in [("All", None), ("Things", True), ("Stuff", False)]:
        res[name], per = average(isthing)
        if name == "All":
            res["per_class"] = {str(k): v for k, v in per.items() if stats[k]["tp"] + stats[k]["fp"] + stats[k]["fn"] > 0}
    return res


def panoptic_fixtures():
    src = os.path.join(SHARED, "coco_panoptic_sample")
    d = os.path.join(FIX, "panoptic")
    os.makedirs(os.path.join(d, "pred"), exist_ok=True)
    gt_json = json.load(open(os.path.join(src, "sample_data", "panoptic_examples.json")))
    cats = {c["id"]: c for c in json.load(open(os.path.join(src, "panoptic_coco_categories.json")))}
    gt_folder = os.path.join(src, "sample_data", "panoptic_examples")
    rng = np.random.default_rng(2)
    pred_json = {"annotations": []}
    cat_ids = sorted(cats)
    for ann in gt_json["annotations"]:
        pan = rgb2id(np.array(Image.open(os.path.join(gt_folder, ann["file_name"])), dtype=np.uint32))
        out = np.zeros_like(pan)
        segs = []
        next_id = 1
        for i, s in enumerate(ann["segments_info"]):
            m = pan == s["id"]
            r = rng.random()
            if r < 0.1:
                continue  # dropped
            if r < 0.5:
                m = np.roll(m, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
            cat = s["category_id"]
            if rng.random() < 0.1:
                cat = int(rng.choice(cat_ids))
            if not np.any(m & (out == 0)):
                continue
            out[m & (out == 0)] = next_id
            segs.append({"id": next_id, "category_id": cat})
            next_id += 1
        # a false positive square, partly over void
        h, w = pan.shape
        sq = np.zeros_like(pan, dtype=bool)
        sq[5:45, w - 50: w - 5] = True
        out[sq] = next_id
        segs.append({"id": next_id, "category_id": int(rng.choice(cat_ids))})
        present = set(np.unique(out).tolist())
        segs = [s for s in segs if s["id"] in present]
        # random ids as colours, like real predictions
        remap = {s["id"]: int(rng.integers(1, 2 ** 24)) for s in segs}
        out2 = np.zeros_like(out)
        for old, new in remap.items():
            out2[out == old] = new
        for s in segs:
            s["id"] = remap[s["id"]]
        Image.fromarray(id2rgb(out2)).save(os.path.join(d, "pred", ann["file_name"]))
        pred_json["annotations"].append({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs})
    with open(os.path.join(d, "pred.json"), "w") as f:
        json.dump(pred_json, f)
    res = pq_compute(gt_json, gt_folder, pred_json, os.path.join(d, "pred"), cats)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(res, f, indent=1)
    print({k: res[k] for k in ["All", "Things", "Stuff"]})


def id_zero_fixtures():
    """coco128 with its annotations numbered from 0 in file order (as labelme2coco writes them)
    against the same detections: pycocotools' numbers on that file (annotation 0 taken for
    "unmatched") and on the file numbered from 1 (the correct ones), segm, bbox and boundary."""
    gt_path = os.path.join(SHARED, "coco128_instances", "annotations", "instances_train2017.json")
    with open(gt_path) as f:
        gt = json.load(f)
    d = os.path.join(FIX, "coco")
    out = {}
    tmp = tempfile.mkdtemp()
    for start in [0, 1]:
        for i, a in enumerate(gt["annotations"]):
            a["id"] = i + start
        p = os.path.join(tmp, f"from{start}.json")
        with open(p, "w") as f:
            json.dump(gt, f)
        for iou_type, dt in [("segm", "coco128_results.json"), ("bbox", "coco128_bbox_results.json"),
                             ("boundary", "coco128_results.json")]:
            out[f"from{start}_{iou_type}"] = coco_eval(p, os.path.join(d, dt), iou_type)
    with open(os.path.join(d, "id_zero_expected.json"), "w") as f:
        json.dump(out, f, indent=1)
    for k, v in out.items():
        print(k, v["stats"][:3])


if __name__ == "__main__":
    if sys.argv[1:] == ["id-zero"]:
        id_zero_fixtures()
        sys.exit(0)
    for sub in ["coco", "panoptic"]:
        shutil.rmtree(os.path.join(FIX, sub), ignore_errors=True)
    coco_fixtures()
    rle_fixtures()
    panoptic_fixtures()
