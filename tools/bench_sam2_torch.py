#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench sam2`: the official SAM 2.1 Hiera-T and Hiera-B+
(`build_sam2`, random weights, saved with torch.save({"model": state_dict}) as the official
files so that segrs loads the very same weights); times the image path (`forward_image`: trunk,
neck, conv_s0 / conv_s1) on the truck photo's 1x3x1024x1024 input and the prompt encoder + mask
decoder per single-point prompt (multimask, high-resolution features, as
`SAM2ImagePredictor._predict` runs them), and writes inputs / outputs for full-size parity.

usage: bench_sam2_torch.py THREADS REPEATS OUTDIR PHOTO   (prints one JSON line)
"""
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

CONFIGS = {"hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml", "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml"}


def median_time(n, f):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    threads, repeats, out, photo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    img = np.array(Image.open(photo).convert("RGB"))
    h, w = img.shape[:2]
    res = {"torch": torch.__version__}
    io = {}
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(16, 2, generator=g) * torch.tensor([w, h])
    io["points"] = pts.contiguous()
    for name, cfg in CONFIGS.items():
        model = build_sam2(cfg, ckpt_path=None, device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
        torch.save({"model": model.state_dict()}, os.path.join(out, f"{name}.pt"))
        pred = SAM2ImagePredictor(model)
        x = pred._transforms(img)[None]
        io["input"] = x[0].contiguous()
        with torch.inference_mode():
            res[f"{name}_encoder_s"] = median_time(repeats, lambda: model.forward_image(x))
            res[f"{name}_set_image_s"] = median_time(max(1, repeats // 2), lambda: pred.set_image(img))
            feats = pred._features
            io[f"{name}.image_embed"] = feats["image_embed"][0].contiguous()
            io[f"{name}.high_res_0"] = feats["high_res_feats"][0][0].contiguous()
            io[f"{name}.high_res_1"] = feats["high_res_feats"][1][0].contiguous()
            pe = model.sam_prompt_encoder.get_dense_pe()

            def decode(i):
                c = pred._transforms.transform_coords(pts[i:i + 1][None], normalize=True, orig_hw=(h, w))
                sparse, dense = model.sam_prompt_encoder(points=(c, torch.ones(1, 1, dtype=torch.int)), boxes=None,
                                                         masks=None)
                return model.sam_mask_decoder(image_embeddings=feats["image_embed"], image_pe=pe,
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=True, repeat_image=False,
                                              high_res_features=feats["high_res_feats"])

            outs = [decode(i) for i in range(16)]
            io[f"{name}.low_res"] = torch.cat([o[0][0] for o in outs]).contiguous()
            io[f"{name}.iou"] = torch.cat([o[1][0] for o in outs]).contiguous()
            res[f"{name}_decoder_s"] = median_time(3, lambda: [decode(i) for i in range(16)]) / 16
    save_file(io, os.path.join(out, "io.safetensors"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
