#!/usr/bin/env python3
"""End-to-end SAM fixtures: a reduced SAM (ViT width 32, 128-px input, 16x16 embedding) with
random weights, saved with torch.save(state_dict) exactly as the official sam_vit_*.pth files,
and the official SamPredictor / SamAutomaticMaskGenerator run on small synthetic photos.

Run with the reference venv:  /tmp/segrs-refenv/bin/python tools/gen_sam_predictor_fixtures.py
Writes tests/fixtures/sam/tiny_sam.pth, tall.png, wide.png, predictor_io.safetensors and
amg_wide.json (the generator's records, coco_rle, for the settings stored next to them).
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "sam")


def tiny_sam():
    torch.manual_seed(11)
    enc = ImageEncoderViT(img_size=128, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                          out_chans=32, qkv_bias=True, use_rel_pos=True, rel_pos_zero_init=False, window_size=5,
                          global_attn_indexes=(1,))
    pe = PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(128, 128), mask_in_chans=8)
    md = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
                     num_multimask_outputs=3, iou_head_hidden_dim=16)
    sam = Sam(image_encoder=enc, prompt_encoder=pe, mask_decoder=md,
              pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    with torch.no_grad():
        for name, p in sam.named_parameters():
            scale = 0.3 if ("rel_pos" in name or "pos_embed" in name) else 0.2
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * scale)
        # A positive IoU bias keeps some predicted IoUs above the thresholds used below.
        sam.mask_decoder.iou_prediction_head.layers[2].bias.add_(0.8)
        # Larger hypernetwork outputs give mask logits of a few units, so that stability
        # scores spread over (0, 1) as with trained weights.
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[2].weight.mul_(120.0)
    sam.eval()
    return sam


def synthetic_photo(w, h, seed):
    """Smooth colour gradients, two discs and a bar, with noise: something like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 60 * np.sin(xx / 9.0), 90 + 50 * np.cos(yy / 13.0), 120 + 0.5 * (xx - yy)], -1)
    for (cx, cy, r, col) in [(0.3 * w, 0.3 * h, 0.2 * min(w, h), (230, 40, 40)), (0.7 * w, 0.65 * h, 0.25 * min(w, h), (30, 200, 60))]:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
    img[int(0.8 * h):int(0.9 * h), int(0.1 * w):int(0.6 * w)] = (20, 20, 220)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    sam = tiny_sam()
    torch.save(sam.state_dict(), os.path.join(OUT, "tiny_sam.pth"))
    tall = synthetic_photo(40, 90, 1)    # resize 128 on the long side: vertical pass first
    wide = synthetic_photo(150, 97, 2)   # downscale, horizontal pass first
    Image.fromarray(tall).save(os.path.join(OUT, "tall.png"))
    Image.fromarray(wide).save(os.path.join(OUT, "wide.png"))
    # A JPEG (4:2:0) and Pillow's decoding of it: segrs must decode JPEGs to the same pixels.
    Image.fromarray(wide).save(os.path.join(OUT, "wide.jpg"), quality=85)
    jpeg_pixels = np.array(Image.open(os.path.join(OUT, "wide.jpg")).convert("RGB"))
    pred = SamPredictor(sam)
    io = {}
    for name, img in [("tall", tall), ("wide", wide)]:
        pred.set_image(img)
        io[f"{name}.embedding"] = pred.features[0]
        io[f"{name}.input_size"] = torch.tensor(pred.input_size, dtype=torch.float32)
        h, w = img.shape[:2]
        cases = {
            "point": dict(point_coords=np.array([[0.3 * w, 0.3 * h]]), point_labels=np.array([1]), multimask_output=True),
            "points_box": dict(point_coords=np.array([[0.7 * w, 0.65 * h], [0.2 * w, 0.85 * h]]), point_labels=np.array([1, 0]),
                               box=np.array([0.4 * w, 0.35 * h, w - 1.0, 0.95 * h]), multimask_output=False),
            "box": dict(box=np.array([2.5, 3.0, 0.5 * w, 0.6 * h]), multimask_output=False),
        }
        for cname, kw in cases.items():
            masks, scores, low = pred.predict(**kw)
            io[f"{name}.{cname}.masks"] = torch.from_numpy(masks.astype(np.uint8))
            io[f"{name}.{cname}.scores"] = torch.from_numpy(scores)
            io[f"{name}.{cname}.low_res"] = torch.from_numpy(low)
        # feed the best multimask logits back with a second point
        best = io[f"{name}.point.low_res"][int(np.argmax(io[f"{name}.point.scores"].numpy()))]
        masks, scores, low = pred.predict(point_coords=np.array([[0.3 * w, 0.3 * h], [0.5 * w, 0.5 * h]]), point_labels=np.array([1, 1]),
                                          mask_input=best[None].numpy(), multimask_output=True)
        io[f"{name}.mask_input.masks"] = torch.from_numpy(masks.astype(np.uint8))
        io[f"{name}.mask_input.scores"] = torch.from_numpy(scores)
        io[f"{name}.mask_input.low_res"] = torch.from_numpy(low)
    io["wide_jpg.pixels"] = torch.from_numpy(jpeg_pixels)
    save_file({k: v.contiguous() if v.dtype == torch.uint8 else v.contiguous().float() for k, v in io.items()}, os.path.join(OUT, "predictor_io.safetensors"))

    settings = dict(points_per_side=12, points_per_batch=16, pred_iou_thresh=0.9, stability_score_thresh=0.05,
                    stability_score_offset=1.0, box_nms_thresh=0.95, crop_n_layers=1, crop_nms_thresh=0.95,
                    crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=2, min_mask_region_area=10)
    gen = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings)
    recs = gen.generate(wide)
    with open(os.path.join(OUT, "amg_wide.json"), "w") as f:
        json.dump({"settings": settings, "records": recs}, f)
    print("records", len(recs), [r["area"] for r in recs])


if __name__ == "__main__":
    main()
