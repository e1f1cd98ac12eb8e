#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench maskrcnn`: torchvision's maskrcnn_resnet50_fpn (v1) with
random weights (BatchNorm statistics and a confident class head, so that it detects things),
saved with torch.save like the official checkpoint so that segrs loads the very same weights;
times the whole predictor (`model([image])`, transform and postprocessing included) on a photo
resized to 1216x800 (an 800x1216 network input), and records its detections for parity.

usage: bench_maskrcnn_torch.py THREADS REPEATS OUTDIR PHOTO   (prints one JSON line)
"""
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.transforms.functional import to_tensor


def main():
    threads, repeats, out, photo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
        model.roi_heads.box_predictor.cls_score.weight.mul_(0.25)
        model.rpn.head.cls_logits.weight.mul_(4.0)
    torch.save(model.state_dict(), os.path.join(out, "maskrcnn_v1.pth"))
    img = Image.open(photo).convert("RGB").resize((1216, 800), Image.BILINEAR)
    img.save(os.path.join(out, "photo.png"))
    x = to_tensor(img)
    with torch.inference_mode():
        model([x])
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = model([x])[0]
            ts.append(time.perf_counter() - t)
    print(json.dumps({
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "seconds": statistics.median(ts),
        "boxes": res["boxes"].tolist(),
        "scores": res["scores"].tolist(),
        "labels": res["labels"].tolist(),
    }))


if __name__ == "__main__":
    main()
