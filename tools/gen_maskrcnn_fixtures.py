"""Parity fixtures for segrs' Mask R-CNN with torchvision's `maskrcnn_resnet50_fpn` (v1) and
`maskrcnn_resnet50_fpn_v2`.

A full-size model has 44-46 M weights, too many to store. Both sides make them from the same
counter-based hash (tests/all/common.rs reproduces it bit for bit); the fixture keeps the key
list with each key's seed and value range, two small photos from ../shared/data (as JPEG, which
segrs decodes to Pillow's pixels), and torchvision's outputs: proposals, boxes, scores, labels
and the pasted masks (COCO RLE of probability > 0.5). The class and objectness weights are
scaled up so that random heads give confident, varied scores (plain random heads give ~1/91).

    /tmp/segrs-refenv/bin/python tools/gen_maskrcnn_fixtures.py
"""
import json
import os

import numpy as np
import torch
import torchvision
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.transforms.functional import to_tensor
from fixture_hash import uniform  # tools/fixture_hash.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "maskrcnn")
DATA = os.path.join(HERE, "..", "..", "shared", "data")
MIN_SIZE, MAX_SIZE = 256, 416
# How much the class weights are scaled up per variant (v1's fully connected head has larger
# activations): confident scores that stay below saturation, so that no two detections tie.
CLS_GAIN = {"v1": 1.5, "v2": 12.0}
PROPOSALS_KEPT = 60
DETECTIONS = 50
PHOTOS = [
    ("dog", os.path.join(DATA, "sam_demo_images", "dog.jpg")),
    ("coco", os.path.join(DATA, "coco128_instances", "train2017", "000000000009.jpg")),
]


def norm_prefixes(model):
    return {
        name + "."
        for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.BatchNorm2d, torchvision.ops.misc.FrozenBatchNorm2d))
    }


def value_range(key, shape, norms, cls_gain):
    """(offset, scale): roughly trained statistics; confident class and objectness heads."""
    is_norm = any(key.startswith(p) for p in norms)
    if is_norm:
        if key.endswith("running_var"):
            return 1.0, 0.25
        if key.endswith("running_mean"):
            return 0.0, 0.1
        if key.endswith("weight"):
            return 1.0, 0.2
        return 0.0, 0.1
    if key.endswith("bias"):
        return 0.0, 0.1
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = float(np.sqrt(3.0 / fan_in))
    if "cls_score" in key:
        s *= cls_gain
    if "rpn.head.cls_logits" in key:
        s *= 0.5
    if "bbox_pred" in key:
        s *= 0.5
    return 0.0, s


def build(variant):
    ctor = maskrcnn_resnet50_fpn if variant == "v1" else maskrcnn_resnet50_fpn_v2
    model = ctor(
        weights=None, weights_backbone=None, min_size=MIN_SIZE, max_size=MAX_SIZE, box_detections_per_img=DETECTIONS
    ).eval()
    norms = norm_prefixes(model)
    sd = model.state_dict()
    spec = []
    new = {}
    for seed, (k, t) in enumerate(sd.items()):
        if k.endswith("num_batches_tracked"):
            new[k] = t
            continue
        off, sc = value_range(k, list(t.shape), norms, CLS_GAIN[variant])
        v = uniform(seed + 1, t.numel()) * np.float32(sc) + np.float32(off)
        new[k] = torch.from_numpy(v).reshape(t.shape)
        spec.append({"key": k, "shape": list(t.shape), "seed": seed + 1, "offset": off, "scale": sc})
    model.load_state_dict(new)
    return model, spec


def rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def run(model, img):
    captured = {}

    def hook(_module, _inputs, output):
        captured["proposals"] = output[0][0]

    h = model.rpn.register_forward_hook(hook)
    with torch.no_grad():
        out = model([to_tensor(img)])[0]
    h.remove()
    masks = (out["masks"][:, 0] > 0.5).numpy()
    return {
        "num_proposals": len(captured["proposals"]),
        "proposals": captured["proposals"][:PROPOSALS_KEPT].numpy().tolist(),
        "boxes": out["boxes"].numpy().tolist(),
        "scores": out["scores"].numpy().tolist(),
        "labels": out["labels"].numpy().tolist(),
        "masks": [rle(m) for m in masks],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    images = {}
    for name, path in PHOTOS:
        im = Image.open(path).convert("RGB")
        w = 320
        im = im.resize((w, round(im.height * w / im.width)), Image.BILINEAR)
        out = os.path.join(OUT, f"{name}.jpg")
        im.save(out, quality=90)
        images[name] = Image.open(out).convert("RGB")
    expected = {"min_size": MIN_SIZE, "max_size": MAX_SIZE, "detections": DETECTIONS, "torchvision": torchvision.__version__}
    for variant in ["v1", "v2"]:
        torch.manual_seed(0)
        model, spec = build(variant)
        with open(os.path.join(OUT, f"keys_{variant}.json"), "w") as f:
            json.dump(spec, f)
        expected[variant] = {}
        for name, img in images.items():
            r = run(model, img)
            print(variant, name, "proposals", len(r["proposals"]), "detections", len(r["boxes"]),
                  "scores", [round(s, 4) for s in r["scores"][:5]], "last", r["scores"][-3:], "labels", r["labels"][:8])
            expected[variant][name] = r
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
