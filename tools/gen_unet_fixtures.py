#!/usr/bin/env python3
"""Parity fixtures for segrs' U-Net, losses and semantic metrics, made with PyTorch / numpy / OpenCV.

Run with the reference venv (../shared/tools/reference-env.sh):

    /tmp/segrs-refenv/bin/python tools/gen_unet_fixtures.py

Writes into tests/fixtures/:
  unet/tiny_transpose.pth, unet/tiny_bilinear.pth, unet/tiny_nobn.pth  state_dicts saved with torch.save
  unet/io.safetensors      inputs and eval-mode logits for each of them
  losses.safetensors       logits, targets, weights and the loss values
  metrics/{pred,gt}/*.png  label maps; metrics/expected.json the reference numbers
The U-Net class below is the classic architecture with the base width, depth, upsampling
and BatchNorm made configurable; key names are identical to the classic class at the defaults.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from reference_metrics import boundary_iou, f_measure

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, bn=True):
        super().__init__()
        if bn:
            self.block = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        else:
            self.block = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.block(x)


class UNet(nn.Module):
    """Classic U-Net (Ronneberger et al. 2015) with same-padding convolutions.

    base=64, depth=4, up='transpose', bn=True is exactly the classic class."""

    def __init__(self, in_channels=3, num_classes=21, base=64, depth=4, up="transpose", bn=True):
        super().__init__()
        self.depth = depth
        ch = [base * 2 ** i for i in range(depth + 1)]
        cin = in_channels
        for i in range(depth):
            setattr(self, f"enc{i + 1}", DoubleConv(cin, ch[i], bn))
            cin = ch[i]
        self.bottleneck = DoubleConv(ch[depth - 1], ch[depth], bn)
        for i in reversed(range(depth)):
            if up == "transpose":
                setattr(self, f"up{i + 1}", nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2))
            else:
                setattr(self, f"up{i + 1}", nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(ch[i + 1], ch[i], 1)))
            setattr(self, f"dec{i + 1}", DoubleConv(2 * ch[i], ch[i], bn))
        self.out_conv = nn.Conv2d(ch[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        skips = []
        for i in range(self.depth):
            x = getattr(self, f"enc{i + 1}")(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in reversed(range(self.depth)):
            x = getattr(self, f"up{i + 1}")(x)
            x = torch.cat([x, skips[i]], dim=1)
            x = getattr(self, f"dec{i + 1}")(x)
        return self.out_conv(x)


def randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def unet_fixtures():
    os.makedirs(os.path.join(ROOT, "unet"), exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    configs = {
        "tiny_transpose": dict(in_channels=3, num_classes=5, base=4, depth=3, up="transpose", bn=True),
        "tiny_bilinear": dict(in_channels=1, num_classes=3, base=4, depth=2, up="bilinear", bn=True),
        "tiny_nobn": dict(in_channels=3, num_classes=2, base=3, depth=2, up="transpose", bn=False),
    }
    for name, cfg in configs.items():
        torch.manual_seed(len(name))
        model = UNet(**cfg)
        randomize_bn(model, gen)
        model.eval()
        torch.save(model.state_dict(), os.path.join(ROOT, "unet", f"{name}.pth"))
        x = torch.randn(2, cfg["in_channels"], 24, 40, generator=gen)
        with torch.no_grad():
            y = model(x)
        tensors[f"{name}.input"] = x.contiguous()
        tensors[f"{name}.logits"] = y.contiguous()
    save_file(tensors, os.path.join(ROOT, "unet", "io.safetensors"))
    with open(os.path.join(ROOT, "unet", "configs.json"), "w") as f:
        json.dump(configs, f, indent=1)
    classic = UNet(3, 21)
    n = sum(p.numel() for p in classic.parameters() if p.requires_grad)
    print("classic U-Net trainable parameters:", n)
    assert n == 31044821, n


def dice_loss(logits, target, ignore_index=255, smooth=1.0):
    c = logits.shape[1]
    p = logits.softmax(1)
    valid = (target != ignore_index)
    t = torch.where(valid, target, torch.zeros_like(target))
    g = F.one_hot(t, c).permute(0, 3, 1, 2).float()
    v = valid.unsqueeze(1).float()
    p = p * v
    g = g * v
    inter = (p * g).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + g.sum((0, 2, 3))
    dice = (2 * inter + smooth) / (den + smooth)
    return 1 - dice.mean()


def focal_loss(logits, target, gamma=2.0, alpha=None, ignore_index=255):
    logp = logits.log_softmax(1)
    valid = (target != ignore_index)
    t = torch.where(valid, target, torch.zeros_like(target))
    logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    pt = logpt.exp()
    loss = -((1 - pt) ** gamma) * logpt
    if alpha is not None:
        loss = loss * alpha[t]
    return loss[valid].mean()


def loss_fixtures():
    gen = torch.Generator().manual_seed(1)
    n, c, h, w = 2, 4, 7, 9
    logits = torch.randn(n, c, h, w, generator=gen) * 2
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[0, :2, :3] = 255
    target[1, 5, :] = 255
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    alpha = torch.tensor([0.25, 0.75, 0.5, 1.0])
    vals = {
        "ce": F.cross_entropy(logits, target, ignore_index=255),
        "ce_weighted": F.cross_entropy(logits, target, weight=weights, ignore_index=255),
        "dice": dice_loss(logits, target),
        "focal": focal_loss(logits, target),
        "focal_gamma05_alpha": focal_loss(logits, target, gamma=0.5, alpha=alpha),
        "ce_plus_dice": F.cross_entropy(logits, target, ignore_index=255) + 0.5 * dice_loss(logits, target),
    }
    # gradients of CE + Dice w.r.t. the logits, to check the backward pass too
    lg = logits.clone().requires_grad_(True)
    (F.cross_entropy(lg, target, ignore_index=255) + 0.5 * dice_loss(lg, target)).backward()
    tensors = {"logits": logits, "target": target.to(torch.int64), "weights": weights, "alpha": alpha,
               "grad_ce_plus_half_dice": lg.grad}
    for k, v in vals.items():
        tensors[k] = v.reshape(1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(ROOT, "losses.safetensors"))
    print({k: float(v) for k, v in vals.items()})


def metric_fixtures():
    from PIL import Image
    rng = np.random.default_rng(5)
    num_classes, ignore = 4, 255
    d = os.path.join(ROOT, "metrics")
    os.makedirs(os.path.join(d, "pred"), exist_ok=True)
    os.makedirs(os.path.join(d, "gt"), exist_ok=True)
    pairs = []
    for i, (h, w) in enumerate([(60, 80), (75, 50), (64, 64)]):
        gt = np.zeros((h, w), np.uint8)
        for _ in range(5):
            c = rng.integers(1, num_classes - 1)  # class 3 never appears in GT
            y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
            gt[y0:y0 + rng.integers(5, 30), x0:x0 + rng.integers(5, 30)] = c
        cy, cx = rng.integers(10, h - 10), rng.integers(10, w - 10)
        yy, xx = np.mgrid[:h, :w]
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 2
        pred = np.roll(gt, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1)).copy()
        noise = rng.random((h, w)) < 0.03
        pred[noise] = rng.integers(0, num_classes, noise.sum())
        if i == 1:
            pred[:5, :5] = 3  # a class only in the prediction
        gt[rng.random((h, w)) < 0.02] = ignore
        Image.fromarray(gt).save(os.path.join(d, "gt", f"img{i}.png"))
        Image.fromarray(pred).save(os.path.join(d, "pred", f"img{i}.png"))
        pairs.append((pred.astype(np.int64), gt.astype(np.int64)))
    # confusion matrix over the dataset
    cm = np.zeros((num_classes, num_classes), np.int64)
    for pred, gt in pairs:
        v = gt != ignore
        cm += np.bincount(gt[v] * num_classes + pred[v], minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(float)
    gt_n = cm.sum(1).astype(float)
    pr_n = cm.sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_n + pr_n - tp)
        acc = tp / gt_n
        dice = 2 * tp / (gt_n + pr_n)
    freq = gt_n / gt_n.sum()
    bf = [[] for _ in range(num_classes)]
    bi = [[] for _ in range(num_classes)]
    for pred, gt in pairs:
        valid = gt != ignore
        for c in range(num_classes):
            pm = (pred == c) & valid
            gm = gt == c
            if not pm.any() and not gm.any():
                continue
            bf[c].append(f_measure(pm, gm))
            bi[c].append(boundary_iou(gm, pm))
    bf_c = [float(np.mean(v)) if v else None for v in bf]
    bi_c = [float(np.mean(v)) if v else None for v in bi]
    nn_ = lambda v: None if (v is None or np.isnan(v)) else float(v)
    out = {
        "num_classes": num_classes,
        "ignore_index": ignore,
        "pixel_accuracy": float(tp.sum() / cm.sum()),
        "mean_accuracy": float(np.nanmean(acc)),
        "miou": float(np.nanmean(iou)),
        "fwiou": float((freq[freq > 0] * np.nan_to_num(iou[freq > 0])).sum()),
        "mean_dice": float(np.nanmean(dice)),
        "boundary_f1": float(np.mean([v for v in bf_c if v is not None])),
        "boundary_iou": float(np.mean([v for v in bi_c if v is not None])),
        "per_class": [{"class": c, "iou": nn_(iou[c]), "accuracy": nn_(acc[c]), "dice": nn_(dice[c]),
                       "boundary_f1": bf_c[c], "boundary_iou": bi_c[c]} for c in range(num_classes)],
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "per_class"}))


if __name__ == "__main__":
    unet_fixtures()
    loss_fixtures()
    metric_fixtures()
