#!/usr/bin/env python3
"""Reference side of `cargo bench --bench mask2former`: `transformers`'
Mask2FormerForUniversalSegmentation with the COCO panoptic Swin-T architecture (embed 96,
depths 2-2-6-2, 100 queries, 6 deformable encoder layers, 9 + 1 decoder layers, 133 classes)
and random weights, saved with `save_pretrained` so that segrs loads the very same folder; times
the whole predictor (the image processor at its default size, the network, and
`post_process_panoptic_segmentation` at the photo's size) and records the logits for parity.

usage: bench_mask2former_torch.py THREADS REPEATS OUTDIR PHOTO   (prints one JSON line)
"""
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    SwinConfig,
)
from transformers.utils import logging

logging.set_verbosity_error()


def main():
    threads, repeats, out, photo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    swin = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = {i: f"class_{i}" for i in range(133)}
    cfg = Mask2FormerConfig(backbone_config=swin, id2label=labels,
                            label2id={v: k for k, v in labels.items()})
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():
        # a class head confident enough that the panoptic post-processing has segments to make
        model.class_predictor.weight.mul_(40.0)
    model.save_pretrained(out)
    processor = Mask2FormerImageProcessor()
    processor.save_pretrained(out)
    img = Image.open(photo).convert("RGB")
    size = [(img.height, img.width)]

    def run():
        inputs = processor(images=img, return_tensors="pt")
        outputs = model(**inputs)
        pan = processor.post_process_panoptic_segmentation(outputs, target_sizes=size)[0]
        return inputs, outputs, pan

    with torch.inference_mode():
        run()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            inputs, outputs, pan = run()
            ts.append(time.perf_counter() - t)
    save_file({
        "pixel_values": inputs["pixel_values"][0].contiguous(),
        "class_logits": outputs.class_queries_logits[0].contiguous(),
        "mask_logits": outputs.masks_queries_logits[0].contiguous(),
    }, os.path.join(out, "reference.safetensors"))
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seconds": statistics.median(ts),
        "input": list(inputs["pixel_values"].shape[-2:]),
        "segments": len(pan["segments_info"]),
    }))


if __name__ == "__main__":
    main()
