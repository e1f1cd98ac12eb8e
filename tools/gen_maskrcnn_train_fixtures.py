"""Parity fixtures for segrs' Mask R-CNN training forward pass: torchvision's `MaskRCNN` as its
fine-tuning recipe builds it (ResNet-50 with `FrozenBatchNorm2d`, `trainable_backbone_layers=3`,
FPN, v1 heads, 3 classes) in training mode on a batch of two DSB2018 images of different sizes.

Weights come from the counter-based hash both sides reproduce (tools/fixture_hash.py,
tests/all/common.rs); the key list is saved. The random choices (sampled anchors, sampled
proposals) and the RPN's proposals are recorded so that segrs can inject the same ones. Saved:
the transformed images (normalised, resized, unpadded), the targets in that frame (boxes,
labels, an instance-id map for the masks), the five losses, and the gradients of named
parameters under the summed loss (their first rows). Also RoIAlign alone under autograd.

    /tmp/segrs-refenv/bin/python tools/gen_maskrcnn_train_fixtures.py
"""
import json
import os

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import roi_align
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

from fixture_hash import uniform  # tools/fixture_hash.py
from gen_maskrcnn_fixtures import norm_prefixes, value_range

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "maskrcnn")
DSB = os.path.join(HERE, "..", "..", "shared", "data", "dsb2018_nuclei_subset", "stage1_train")
IMAGES = ["0280fa8f60", "0d3640c1f1"]  # 256x256 (16 nuclei), 256x320 (21 nuclei)
NUM_CLASSES = 3
MIN_SIZE, MAX_SIZE = 128, 256
GRAD_KEYS = [
    "rpn.head.cls_logits.weight",
    "rpn.head.bbox_pred.bias",
    "rpn.head.conv.0.0.bias",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.box_head.fc7.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.conv5_mask.bias",
    "roi_heads.mask_head.0.0.bias",
    "backbone.fpn.layer_blocks.0.0.bias",
    "backbone.fpn.inner_blocks.3.0.bias",
    "backbone.body.layer4.0.conv1.weight",
    "backbone.body.layer2.0.downsample.0.weight",
    "backbone.body.layer2.0.conv2.weight",
]
BATCH_NORM_GRAD_KEYS = [
    "backbone.body.conv1.weight",
    "backbone.body.bn1.weight",
    "backbone.body.layer1.0.bn3.bias",
    "backbone.body.layer3.1.bn2.weight",
]
ROWS = 8


def build(norm):
    """`frozen`: the fine-tuning recipe (FrozenBatchNorm2d, three trainable stages); `batch`:
    torchvision's choice without pretrained weights (BatchNorm2d in training mode, whole body)."""
    if norm == "frozen":
        body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(body, 3)
    else:
        backbone = _resnet_fpn_extractor(resnet50(weights=None), 5)
    model = MaskRCNN(backbone, num_classes=NUM_CLASSES, min_size=MIN_SIZE, max_size=MAX_SIZE)
    norms = norm_prefixes(model)
    spec, new = [], {}
    for seed, (k, t) in enumerate(model.state_dict().items()):
        if k.endswith("num_batches_tracked"):
            new[k] = t
            continue
        off, sc = value_range(k, list(t.shape), norms, 1.0)
        v = uniform(seed + 1, t.numel()) * np.float32(sc) + np.float32(off)
        new[k] = torch.from_numpy(v).reshape(t.shape)
        spec.append({"key": k, "shape": list(t.shape), "seed": seed + 1, "offset": off, "scale": sc})
    model.load_state_dict(new)
    return model.train(), spec


def find(short):
    return next(d for d in sorted(os.listdir(DSB)) if d.startswith(short))


def load(short):
    d = find(short)
    img = to_tensor(Image.open(os.path.join(DSB, d, "images", d + ".png")).convert("RGB"))
    masks, boxes = [], []
    for f in sorted(os.listdir(os.path.join(DSB, d, "masks"))):
        m = np.array(Image.open(os.path.join(DSB, d, "masks", f))) > 0
        ys, xs = np.nonzero(m)
        masks.append(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    labels = [1 + i % (NUM_CLASSES - 1) for i in range(len(masks))]
    return img, {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)),
    }


class Recorder:
    """Wraps a sampler and records what it picked (as index lists per image)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, labels):
        pos, neg = self.inner(labels)
        self.calls.append([(torch.where(p)[0].tolist(), torch.where(n)[0].tolist()) for p, n in zip(pos, neg)])
        return pos, neg


def roi_align_case(out):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 9, 11, generator=g, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.5, 1.0, 7.3, 6.2], [1, 2.0, 0.0, 10.9, 8.9], [0, -1.5, 3.0, 4.0, 12.0], [1, 3.3, 3.3, 3.6, 3.5]]
    )
    y = roi_align(x, rois, (5, 4), spatial_scale=0.9, sampling_ratio=2, aligned=False)
    r = torch.randn(y.shape, generator=g)
    (y * r).sum().backward()
    out.update({"roi.x": x.detach(), "roi.rois": rois, "roi.y": y.detach(), "roi.r": r, "roi.dx": x.grad})


def main():
    for norm, suffix in [("frozen", ""), ("batch", "_batchnorm")]:
        case(norm, suffix)


def case(norm, suffix):
    torch.manual_seed(0)
    model, spec = build(norm)
    with open(os.path.join(OUT, f"train{suffix}_keys.json"), "w") as f:
        json.dump(spec, f)
    images, targets = zip(*[load(s) for s in IMAGES])
    rpn_rec, roi_rec = Recorder(model.rpn.fg_bg_sampler), Recorder(model.roi_heads.fg_bg_sampler)
    model.rpn.fg_bg_sampler, model.roi_heads.fg_bg_sampler = rpn_rec, roi_rec
    proposals = {}
    filt = model.rpn.filter_proposals

    def record_filter(*a, **k):
        boxes, scores = filt(*a, **k)
        proposals["boxes"] = [b.detach().clone() for b in boxes]
        return boxes, scores

    model.rpn.filter_proposals = record_filter
    # The transformed inputs, as the model sees them (deterministic: the same call inside).
    tl, tt = model.transform(list(images), [dict(t) for t in targets])
    losses = model(list(images), [dict(t) for t in targets])
    total = sum(losses.values())
    total.backward()
    out = {}
    params = dict(model.named_parameters())
    keys = GRAD_KEYS + (BATCH_NORM_GRAD_KEYS if norm == "batch" else [])
    for k in keys:
        out["grad." + k] = params[k].grad[:ROWS].contiguous()
    for name, v in losses.items():
        out["loss." + name] = v.detach().reshape(1)
    for i, (h, w) in enumerate(tl.image_sizes):
        out[f"image{i}.pixels"] = tl.tensors[i, :, :h, :w].contiguous()
        out[f"image{i}.boxes"] = tt[i]["boxes"]
        out[f"image{i}.labels"] = tt[i]["labels"].float()
        ids = torch.zeros((h, w))
        for j, m in enumerate(tt[i]["masks"]):
            ids[m > 0] = j + 1
        out[f"image{i}.mask_ids"] = ids
        out[f"image{i}.proposals"] = proposals["boxes"][i]
        (rp, rn), (bp, bn) = rpn_rec.calls[0][i], roi_rec.calls[0][i]
        for k, v in [("rpn_pos", rp), ("rpn_neg", rn), ("roi_pos", bp), ("roi_neg", bn)]:
            out[f"image{i}.{k}"] = torch.tensor(v, dtype=torch.float32)
        assert all(((m > 0) == (ids == j + 1)).all() for j, m in enumerate(tt[i]["masks"])), "overlapping masks"
    if norm == "frozen":
        roi_align_case(out)
    else:
        # The running statistics after the step (momentum 0.1, unbiased variance).
        sd = model.state_dict()
        for k in ["backbone.body.bn1.running_var", "backbone.body.layer3.2.bn2.running_mean"]:
            out["after." + k] = sd[k]
    save_file({k: v.float().contiguous() for k, v in out.items()}, os.path.join(OUT, f"train{suffix}.safetensors"),
              metadata={"torchvision": torchvision.__version__, "min_size": str(MIN_SIZE), "max_size": str(MAX_SIZE)})
    print(norm, {k: round(float(v), 6) for k, v in losses.items()})
    print("sizes", tl.image_sizes, "gt", [len(t["boxes"]) for t in tt], "proposals", [len(p) for p in proposals["boxes"]],
          "rpn pos", [len(c[0]) for c in rpn_rec.calls[0]], "roi pos", [len(c[0]) for c in roi_rec.calls[0]])


if __name__ == "__main__":
    main()
