#!/usr/bin/env python3
"""Parity fixtures for segrs' SAM parts, made with the official `segment_anything` package on
random weights (a reduced embedding width; the layer structure and key names are the official
ones, with the `prompt_encoder.` prefix of the official checkpoints).

Run with the reference venv:  /tmp/segrs-refenv/bin/python tools/gen_sam_fixtures.py
Writes tests/fixtures/sam/prompt_encoder.safetensors (weights) and prompt_encoder_io.safetensors.
"""
import os

import torch
from safetensors.torch import save_file
from segment_anything.modeling.image_encoder import ImageEncoderViT
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.prompt_encoder import PromptEncoder
from segment_anything.modeling.transformer import TwoWayTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "sam")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    pe = PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=8)
    with torch.no_grad():
        for p in pe.parameters():
            p.copy_(torch.randn_like(p) * 0.5)  # LayerNorm weights too, so nothing is trivially 1/0
    pe.eval()
    weights = {f"prompt_encoder.{k}": v.contiguous() for k, v in pe.state_dict().items()}
    save_file(weights, os.path.join(OUT, "prompt_encoder.safetensors"))
    g = torch.Generator().manual_seed(1)
    pts = torch.tensor([[[10.0, 20.0], [40.5, 3.25], [63.0, 63.0]]])
    lbl = torch.tensor([[1, 0, 1]])
    box = torch.tensor([[5.0, 7.0, 50.0, 60.0]])
    mask = torch.randn(1, 1, 32, 32, generator=g) * 3
    io = {}
    with torch.no_grad():
        s, d = pe((pts, lbl), None, None)
        io["points.sparse"], io["points.dense"] = s, d
        s, _ = pe(None, box, None)
        io["box.sparse"] = s
        s, d = pe((pts[:, :1], lbl[:, :1]), box, mask)
        io["point_box_mask.sparse"], io["point_box_mask.dense"] = s, d
        io["dense_pe"] = pe.get_dense_pe()
    io["points"], io["labels"], io["box"], io["mask"] = pts, lbl.float(), box, mask
    save_file({k: v.contiguous().float() for k, v in io.items()}, os.path.join(OUT, "prompt_encoder_io.safetensors"))
    print({k: tuple(v.shape) for k, v in io.items()})

    # Mask decoder, reduced width (32 channels, MLP 64, IoU head 16), official depth 2 and 8 heads.
    torch.manual_seed(3)
    md = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
                     num_multimask_outputs=3, iou_head_hidden_dim=16)
    with torch.no_grad():
        for p in md.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    md.eval()
    save_file({f"mask_decoder.{k}": v.contiguous() for k, v in md.state_dict().items()},
              os.path.join(OUT, "mask_decoder.safetensors"))
    g = torch.Generator().manual_seed(4)
    image = torch.randn(1, 32, 8, 8, generator=g)
    with torch.no_grad():
        sparse, dense = pe((pts, lbl), None, None)
        image_pe = pe.get_dense_pe()
        masks, iou = md.predict_masks(image, image_pe, sparse, dense)
    save_file({"image": image, "image_pe": image_pe.contiguous(), "sparse": sparse.contiguous(), "dense": dense.contiguous(),
               "masks": masks.contiguous(), "iou": iou.contiguous()}, os.path.join(OUT, "mask_decoder_io.safetensors"))
    print("masks", tuple(masks.shape), "iou", iou)

    # Image encoder: a reduced ViT (64x64 input, patch 8 -> 8x8 grid, width 32, 2 heads, depth 2),
    # window 3 (the grid is padded to 9) in block 0 and global attention in block 1.
    torch.manual_seed(5)
    enc = ImageEncoderViT(img_size=64, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                          out_chans=16, qkv_bias=True, use_rel_pos=True, rel_pos_zero_init=False, window_size=3,
                          global_attn_indexes=(1,))
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "rel_pos" in name or "pos_embed" in name else 0.2))
    enc.eval()
    save_file({f"image_encoder.{k}": v.contiguous() for k, v in enc.state_dict().items()},
              os.path.join(OUT, "image_encoder.safetensors"))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        y = enc(x)
    save_file({"input": x, "embedding": y.contiguous()}, os.path.join(OUT, "image_encoder_io.safetensors"))
    print("embedding", tuple(y.shape))


if __name__ == "__main__":
    main()
