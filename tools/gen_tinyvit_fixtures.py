#!/usr/bin/env python3
"""Parity fixture for segrs' TinyViT (MobileSAM's image encoder) with the official `mobile_sam`
code (the `mobilesam-mirror` package in the reference venv).

TinyViT only runs at 1024x1024 with a 320-channel last stage, so even a reduced model has 2.4 M
weights. Instead of storing them, weights and input come from a counter-based hash that
tests/all/sam_tinyvit.rs reproduces bit for bit (same f32 operations); the fixture keeps the key
list with shapes and value ranges, and a strided sample of the output embedding.

Run with the reference venv:  /tmp/segrs-refenv/bin/python tools/gen_tinyvit_fixtures.py
"""
import json
import os

import numpy as np
import torch
from mobile_sam.modeling.tiny_vit_sam import TinyViT
from safetensors.torch import save_file
from fixture_hash import uniform  # tools/fixture_hash.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "sam")
SAMPLE_STRIDE = 61


def value_range(key, shape):
    """(offset, scale) of a key's values: roughly the statistics of trained weights."""
    if key.endswith("running_var"):
        return 1.0, 0.25
    if key.endswith("running_mean"):
        return 0.0, 0.1
    if key.endswith(".bn.weight") or "norm" in key and key.endswith("weight") or key.startswith("neck.1.w") or key.startswith("neck.3.w"):
        return 1.0, 0.2
    if key.endswith("bias") and "attention_biases" not in key:
        return 0.0, 0.1
    if "attention_biases" in key:
        return 0.0, 0.5
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return 0.0, float(np.sqrt(3.0 / fan_in))


def main():
    torch.manual_seed(0)
    enc = TinyViT(img_size=1024, in_chans=3, num_classes=10, embed_dims=[16, 32, 48, 320], depths=[1, 1, 1, 1],
                  num_heads=[1, 2, 3, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3)
    sd = enc.state_dict()
    keys = []
    new = {}
    for idx, (k, v) in enumerate(sd.items()):
        if v.dtype != torch.float32:
            continue  # num_batches_tracked
        off, sc = value_range(k, list(v.shape))
        vals = uniform(idx + 1, v.numel()) * np.float32(sc) + np.float32(off)
        new[k] = torch.from_numpy(vals.reshape(tuple(v.shape)))
        keys.append({"key": k, "shape": list(v.shape), "seed": idx + 1, "offset": off, "scale": sc})
    enc.load_state_dict(new, strict=False)
    enc.eval()  # after loading: eval() caches the attention biases
    x = torch.from_numpy(uniform(987654, 3 * 1024 * 1024).reshape(1, 3, 1024, 1024) * np.float32(2.0))
    with torch.no_grad():
        y = enc(x)[0].contiguous().flatten()
    sample = y[::SAMPLE_STRIDE].contiguous()
    with open(os.path.join(OUT, "tinyvit_keys.json"), "w") as f:
        json.dump({"input": {"seed": 987654, "scale": 2.0}, "sample_stride": SAMPLE_STRIDE, "keys": keys}, f)
    save_file({"embedding_sample": sample, "embedding_norm": y.norm().reshape(1)},
              os.path.join(OUT, "tinyvit_io.safetensors"))
    print(len(keys), "keys; output", tuple(enc(x).shape), "sample", sample.shape)


if __name__ == "__main__":
    main()


def official_key_lists():
    """Key names and shapes of the official vit_b and MobileSAM vit_t checkpoints (what
    sam_vit_b_01ec64.pth and mobile_sam.pt hold), for the loader's variant-detection test."""
    from mobile_sam import sam_model_registry as mobile_registry
    from segment_anything import sam_model_registry
    out = {}
    for name, reg in [("vit_b", sam_model_registry), ("vit_t", mobile_registry)]:
        sd = reg[name](checkpoint=None).state_dict()
        out[name] = [[k, list(v.shape)] for k, v in sd.items()]
    with open(os.path.join(OUT, "official_keys.json"), "w") as f:
        json.dump(out, f)
    print({k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    official_key_lists()
