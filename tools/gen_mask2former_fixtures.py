"""Parity fixtures for segrs' Mask2Former with Hugging Face `transformers`'
`Mask2FormerForUniversalSegmentation` (Swin backbone).

A reduced configuration (Swin with 4 stages of 2 blocks and 7x7 windows, 2 deformable encoder
layers, 3 masked-attention decoder layers, 20 queries, the 133 COCO panoptic categories) is
built with seeded random weights; the class head and the mask projection are scaled up so that
random weights give confident classes and decided masks (plain random heads give flat scores and
mask logits near 0, so the panoptic output would be empty). It is saved with `save_pretrained`
(`config.json` + `model.safetensors`, `preprocessor_config.json`), as users download models.

Recorded for two COCO val2017 photos from ../shared/data/coco_panoptic_sample: the processor's
pixel values, the backbone's feature maps, the pixel decoder's outputs, the class and mask
logits, and the three post-processed outputs (panoptic with the stuff categories fused,
instance, semantic) at the photo's size. The same heads on a narrow bottleneck ResNet
backbone are saved as `pytorch_model.bin` (as older hub folders hold them), with their logits on
the first photo. Multi-scale deformable attention is recorded alone on random inputs.

    /tmp/segrs-refenv/bin/python tools/gen_mask2former_fixtures.py
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    ResNetConfig,
    SwinConfig,
)
from transformers.models.mask2former.modeling_mask2former import multi_scale_deformable_attention

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "mask2former")
DATA = os.path.join(HERE, "..", "..", "shared", "data", "coco_panoptic_sample")
PHOTOS = ["000000142238", "000000439180"]
torch.set_num_threads(2)
# Spread of the class logits over queries and of each mask's logits over its pixels.
CLASS_STD, MASK_STD = 4.0, 10.0


def swin():
    return SwinConfig(
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        drop_path_rate=0.0,
    )


def resnet():
    """A narrow ResNet with bottleneck blocks (HF `ResNetConfig`, the layout of ResNet-50)."""
    return ResNetConfig(
        embedding_size=16,
        hidden_sizes=[32, 64, 128, 256],
        depths=[1, 1, 2, 1],
        layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def build(backbone):
    cats = json.load(open(os.path.join(DATA, "panoptic_coco_categories.json")))
    id2label = {i: c["name"] for i, c in enumerate(cats)}
    cfg = Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=64,
        mask_feature_size=64,
        hidden_dim=64,
        encoder_feedforward_dim=128,
        dim_feedforward=128,
        encoder_layers=2,
        decoder_layers=4,
        num_attention_heads=4,
        num_queries=20,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():
        # Random but not flat: every parameter gets a spread like a trained network's.
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 1.0 / np.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0.0, 0.1)
    # Random queries end alike after the decoder's post-norm layers, so the heads are centred
    # on the queries' mean (on the first photo) and scaled up: the class and mask outputs then
    # follow what tells the queries apart.
    img = Image.open(os.path.join(DATA, "sample_data", "input_images", PHOTOS[0] + ".jpg")).convert("RGB")
    pixels = processor()(images=img, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embedder = model.model.transformer_module.decoder.mask_predictor.mask_embedder
        last = embedder.get_submodule("2").get_submodule("0")
        # Mask embeddings orthogonal to the mean pixel feature: masks centred on 0, not all on
        # or all off.
        mean = model.model(pixels).pixel_decoder_last_hidden_state[0].mean((1, 2))
        project = torch.eye(mean.numel()) - torch.outer(mean, mean) / mean.dot(mean)
        last.weight.copy_(project @ last.weight)
        last.bias.copy_(project @ last.bias)
        for _ in range(3):
            logits = model.model(pixels).masks_queries_logits[-1][0]
            gain = MASK_STD / float(logits.flatten(1).std(1).mean())
            last.weight.mul_(gain)
            last.bias.mul_(gain)
        # Then shifted down by one spread: each mask covers a sixth of the photo, so that
        # several segments survive the panoptic overlap test.
        last.bias.sub_(MASK_STD * mean / mean.dot(mean))
        states = model.model(pixels, output_hidden_states=True).transformer_decoder_intermediate_states[-1][:, 0]
        cls = model.class_predictor
        centred = states - states.mean(0)
        cls.weight.mul_(CLASS_STD / float((centred @ cls.weight.T).std()))
        cls.bias.copy_(-cls.weight @ states.mean(0))
    return model, cats


def processor():
    return Mask2FormerImageProcessor(size={"shortest_edge": 160, "longest_edge": 256})


def runs(label_map):
    """A label map, row-major, as [value, count, value, count, ...]."""
    flat = label_map.flatten().to(torch.int64).numpy()
    edges = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], edges])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return [int(v) for pair in zip(flat[starts], counts) for v in pair]


def main():
    os.makedirs(OUT, exist_ok=True)
    model, cats = build(swin())
    model_dir = os.path.join(OUT, "model")
    model.save_pretrained(model_dir)
    processor_ = processor()
    processor_.save_pretrained(model_dir)
    fuse = {i for i, c in enumerate(cats) if not c["isthing"]}

    tensors, meta = {}, {"photos": [], "label_ids_to_fuse": sorted(fuse)}
    for name in PHOTOS:
        img = Image.open(os.path.join(DATA, "sample_data", "input_images", name + ".jpg")).convert("RGB")
        inputs = processor_(images=img, return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
        size = [(img.height, img.width)]
        pan = processor_.post_process_panoptic_segmentation(
            out, threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.8,
            label_ids_to_fuse=fuse, target_sizes=size)[0]
        inst = processor_.post_process_instance_segmentation(
            out, threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.8,
            target_sizes=size, return_binary_maps=True)[0]
        sem = processor_.post_process_semantic_segmentation(out, target_sizes=size)[0]
        p = name + "."
        tensors[p + "pixel_values"] = inputs["pixel_values"][0].contiguous()
        for i, f in enumerate(out.encoder_hidden_states):
            tensors[p + f"backbone.{i}"] = f[0].contiguous()
        for i, f in enumerate(out.pixel_decoder_hidden_states):
            tensors[p + f"pixel_decoder.{i}"] = f[0].contiguous()
        tensors[p + "mask_features"] = out.pixel_decoder_last_hidden_state[0].contiguous()
        tensors[p + "class_logits"] = out.class_queries_logits[0].contiguous()
        tensors[p + "mask_logits"] = out.masks_queries_logits[0].contiguous()
        seg = inst["segmentation"]
        if seg is None or seg.dim() != 3:
            seg = torch.zeros((0, img.height, img.width))
        meta["photos"].append({
            "name": name,
            "size": [img.height, img.width],
            "input": list(inputs["pixel_values"].shape[-2:]),
            "panoptic": pan["segments_info"],
            "instance": inst["segments_info"],
            "panoptic_map": runs(pan["segmentation"]),
            "semantic_map": runs(sem),
            "instance_masks": [runs(m) for m in seg],
        })
        print(name, "input", tuple(inputs["pixel_values"].shape), "panoptic segments",
              len(pan["segments_info"]), "instances", len(inst["segments_info"]),
              "semantic classes", len(torch.unique(sem)),
              "mask logit std", float(out.masks_queries_logits.std()))

    # Multi-scale deformable attention alone: 2 heads of 8 channels, 3 levels, 4 points, with
    # sampling locations reaching past the borders (zero padding).
    g = torch.Generator().manual_seed(1)
    shapes = [(12, 9), (6, 5), (3, 3)]
    n = sum(h * w for h, w in shapes)
    value = torch.randn(1, n, 2, 8, generator=g)
    loc = torch.rand(1, 30, 2, 3, 4, 2, generator=g) * 1.4 - 0.2
    attn = torch.rand(1, 30, 2, 3, 4, generator=g)
    attn = attn / attn.sum(dim=(-1, -2), keepdim=True)
    msda = {
        "value": value[0].contiguous(),
        "locations": loc[0].contiguous(),
        "weights": attn[0].contiguous(),
        "out": multi_scale_deformable_attention(value, shapes, loc, attn)[0].contiguous(),
    }
    save_file(msda, os.path.join(OUT, "msda.safetensors"), metadata={"shapes": json.dumps(shapes)})
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))

    # The same heads on a ResNet backbone (bottleneck blocks, BatchNorm with random
    # statistics), on the first photo: logits only.
    # Kept as `pytorch_model.bin` (torch.save of the saved tensors), as older hub folders are.
    model, _ = build(resnet())
    rdir = os.path.join(OUT, "resnet")
    model.save_pretrained(rdir)
    processor_.save_pretrained(rdir)
    saved = load_file(os.path.join(rdir, "model.safetensors"))
    torch.save(saved, os.path.join(rdir, "pytorch_model.bin"))
    os.remove(os.path.join(rdir, "model.safetensors"))
    img = Image.open(os.path.join(DATA, "sample_data", "input_images", PHOTOS[0] + ".jpg")).convert("RGB")
    inputs = processor_(images=img, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
    res = {"pixel_values": inputs["pixel_values"][0].contiguous(),
           "class_logits": out.class_queries_logits[0].contiguous(),
           "mask_logits": out.masks_queries_logits[0].contiguous()}
    for i, f in enumerate(out.encoder_hidden_states):
        res[f"backbone.{i}"] = f[0].contiguous()
    save_file(res, os.path.join(OUT, "resnet_reference.safetensors"))
    print("resnet: mask logit std", float(out.masks_queries_logits.std()),
          "max class prob", float(out.class_queries_logits.softmax(-1)[..., :-1].max()))
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
