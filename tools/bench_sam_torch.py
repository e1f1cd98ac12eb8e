#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench sam`: SAM ViT-B (segment_anything) and MobileSAM vit_t
(mobile_sam) with random weights, saved as .pth exactly like the official checkpoints so that
segrs loads the very same weights; times the image encoder at 1x3x1024x1024 and the prompt
encoder + mask decoder per single-point prompt, and writes inputs/outputs for full-size parity.

With a PHOTO, also runs the official SamPredictor end to end on it (ViT-B): a point prompt
(multimask) and a box with a negative point, masks at the photo's size, for segrs' predictor to
match.

usage: bench_sam_torch.py THREADS REPEATS OUTDIR [PHOTO]   (prints one JSON line)
"""
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import torch
from safetensors.torch import save_file


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


def timed(n, f):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    threads, repeats, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    from segment_anything import sam_model_registry
    from mobile_sam import sam_model_registry as mobile_registry

    res = {"torch": torch.__version__}
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 1024, 1024, generator=g)
    io = {"input": x}
    for name, reg in [("vit_b", sam_model_registry), ("vit_t", mobile_registry)]:
        sam = reg[name]()
        randomize(sam, 1 if name == "vit_b" else 2)
        sam.eval()  # after the weights: TinyViT caches its attention biases in eval()
        torch.save(sam.state_dict(), os.path.join(out, f"{name}.pth"))
        with torch.inference_mode():
            emb = sam.image_encoder(x)
            res[f"{name}_encoder_s"] = timed(max(1, repeats), lambda: sam.image_encoder(x))
            io[f"{name}.embedding"] = emb.contiguous()
            pe = sam.prompt_encoder
            pts = torch.rand(16, 1, 2, generator=g) * 1024
            lbl = torch.ones(16, 1, dtype=torch.int)
            dense_pe = pe.get_dense_pe()

            def decode(i):
                sp, de = pe(points=(pts[i:i + 1], lbl[i:i + 1]), boxes=None, masks=None)
                return sam.mask_decoder(image_embeddings=emb, image_pe=dense_pe, sparse_prompt_embeddings=sp,
                                        dense_prompt_embeddings=de, multimask_output=True)

            lows, ious = [], []
            for i in range(16):
                m, q = decode(i)
                lows.append(m)
                ious.append(q)
            res[f"{name}_decoder_s"] = timed(10, lambda: [decode(i) for i in range(16)]) / 16
            io[f"{name}.points"] = pts.reshape(16, 2).contiguous()
            io[f"{name}.low_res"] = torch.cat(lows).contiguous()
            io[f"{name}.iou"] = torch.cat(ious).contiguous()
        if name == "vit_b" and len(sys.argv) > 4:
            import numpy as np
            from PIL import Image
            from segment_anything import SamPredictor
            photo = np.array(Image.open(sys.argv[4]).convert("RGB"))
            pred = SamPredictor(sam)
            t = time.perf_counter()
            pred.set_image(photo)
            res["photo_set_image_s"] = time.perf_counter() - t
            h, w = photo.shape[:2]
            t = time.perf_counter()
            m, q, low = pred.predict(point_coords=np.array([[0.45 * w, 0.4 * h]]), point_labels=np.array([1]), multimask_output=True)
            res["photo_predict_s"] = time.perf_counter() - t
            io["photo.point.masks"] = torch.from_numpy(m.astype(np.uint8))
            io["photo.point.scores"] = torch.from_numpy(q)
            m, q, low = pred.predict(point_coords=np.array([[0.6 * w, 0.5 * h]]), point_labels=np.array([0]),
                                     box=np.array([0.1 * w, 0.2 * h, 0.9 * w, 0.8 * h]), multimask_output=False)
            io["photo.box.masks"] = torch.from_numpy(m.astype(np.uint8))
            io["photo.box.scores"] = torch.from_numpy(q)
    save_file(io, os.path.join(out, "io.safetensors"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
