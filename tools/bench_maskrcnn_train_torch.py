"""torchvision's side of the Mask R-CNN training benchmark: `references/detection/train.py`'s
recipe on a COCO instances dataset, with the settings `segrs maskrcnn train` uses by default
from fresh weights (maskrcnn_resnet50_fpn without pretrained weights: BatchNorm2d in training
mode, the whole body trained; SGD momentum 0.9, weight decay 1e-4, linear warm-up over the
first epoch's first min(1000, steps - 1) steps from 1e-3, x0.1 at 2/3 and 8/9 of the epochs;
horizontal flips; images without objects and crowd regions left out). Stops starting epochs
once `--budget` seconds have passed; then scores the validation set with pycocotools (mask and
box AP) and prints a JSON summary with the mean step time.

    /tmp/segrs-refenv/bin/python tools/bench_maskrcnn_train_torch.py \\
        --data train.json --images train_images --val-data val.json --val-images val_images \\
        --epochs 12 --min-size 256 --max-size 512 --threads 2 [--budget 1800]
"""
import argparse
import json
import math
import random
import time

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.transforms.functional import to_tensor


def load_set(json_path, images, train):
    coco = COCO(json_path)
    items = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)]
        h, w = info["height"], info["width"]
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            b = [min(max(x, 0), w), min(max(y, 0), h), min(max(x + bw, 0), w), min(max(y + bh, 0), h)]
            if b[2] <= b[0] or b[3] <= b[1]:
                continue
            boxes.append(b)
            labels.append(a["category_id"])
            masks.append(coco.annToMask(a))
        if train and not boxes:
            continue
        items.append((img_id, f"{images}/{info['file_name']}", boxes, labels, masks))
    return coco, items


def sample(item, flip):
    _, path, boxes, labels, masks = item
    img = to_tensor(Image.open(path).convert("RGB"))
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0,) + img.shape[1:], dtype=torch.uint8),
    }
    if flip:
        w = img.shape[-1]
        img = img.flip(-1)
        t["boxes"][:, [0, 2]] = w - t["boxes"][:, [2, 0]]
        t["masks"] = t["masks"].flip(-1)
    return img, t


def evaluate(model, coco, items):
    model.eval()
    results = []
    with torch.no_grad():
        for img_id, path, *_ in items:
            out = model([to_tensor(Image.open(path).convert("RGB"))])[0]
            for b, s, l, m in zip(out["boxes"], out["scores"], out["labels"], out["masks"]):
                rle = mask_utils.encode(np.asfortranarray((m[0] > 0.5).numpy().astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                x0, y0, x1, y1 = b.tolist()
                results.append({"image_id": img_id, "category_id": int(l), "score": float(s),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": rle})
    model.train()
    if not results:
        return {"mask_ap": 0.0, "mask_ap50": 0.0, "box_ap": 0.0, "box_ap50": 0.0}
    dt = coco.loadRes(results)
    out = {}
    for kind, name in [("segm", "mask"), ("bbox", "box")]:
        ev = COCOeval(coco, dt, kind)
        ev.evaluate(); ev.accumulate(); ev.summarize()
        out[f"{name}_ap"], out[f"{name}_ap50"] = float(ev.stats[0]), float(ev.stats[1])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--val-data", required=True)
    p.add_argument("--val-images", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    lr = a.lr if a.lr is not None else 0.02 * a.batch_size / 16
    _, train = load_set(a.data, a.images, True)
    vcoco, val = load_set(a.val_data, a.val_images, False)
    num_classes = max(max(it[3]) for it in train) + 1
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                  min_size=a.min_size, max_size=a.max_size)
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = math.ceil(len(train) / a.batch_size)
    milestones = [math.ceil(a.epochs * 2 / 3), math.ceil(a.epochs * 8 / 9)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    start = time.time()
    step_times, history = [], []
    epochs_done = 0
    for epoch in range(a.epochs):
        if time.time() - start > a.budget:
            break
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=min(1000, steps - 1)) if epoch == 0 else None
        order = list(range(len(train)))
        random.shuffle(order)
        sums = {}
        for i in range(0, len(order), a.batch_size):
            batch = [sample(train[j], random.random() < 0.5) for j in order[i:i + a.batch_size]]
            t0 = time.time()
            losses = model([b[0] for b in batch], [b[1] for b in batch])
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            step_times.append(time.time() - t0)
            if warm is not None:
                warm.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        sched.step()
        epochs_done = epoch + 1
        rec = {"epoch": epochs_done, "loss": sum(sums.values()) / steps, "elapsed": time.time() - start}
        rec.update({k: v / steps for k, v in sums.items()})
        print(json.dumps(rec), flush=True)
        history.append(rec)
    train_seconds = time.time() - start
    scores = evaluate(model, vcoco, val)
    print(json.dumps({"torchvision": True, "epochs": epochs_done, "train_seconds": train_seconds,
                      "step_seconds_mean": float(np.mean(step_times)), **scores}))


if __name__ == "__main__":
    main()
