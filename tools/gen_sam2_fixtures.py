"""Parity fixtures for segrs' SAM 2 image path against the official `sam2` package.

The model is the official SAM 2.1 Hiera-T, built with
`build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu")` (which also
turns on `dynamic_multimask_via_stability`, as for the released checkpoints). Its 39 M weights
are too many to store: both sides make them from the same counter-based hash
(tests/all/common.rs reproduces it bit for bit), each key with its own seed and range
(fan-in scaled weights, norms around 1). Two output heads are shifted so that random weights
give outputs worth comparing: the IoU head's last bias by +2 (sigmoid scores around 0.88, so the
automatic generator's 0.8 threshold keeps some masks) and the hypernetworks' last layers scaled
by 4 (mask logits well away from 0, so that few pixels sit on the threshold). The state dict is
also written with `torch.save({"model": state_dict})`, as the official files are, to
/tmp/segrs-sam2-tiny.pt (too big to keep) for the loader check.

Stored per photo (../shared/data/sam_demo_images): strided samples of the image embedding, the
high-resolution features and the position encoding; per prompt: strided samples of the
low-resolution logits, the scores, the object score and the final masks (COCO RLE). A second
predictor with hole and sprinkle removal uses OpenCV's 8-connected components where the
reference needs its CUDA extension. The automatic generator runs with 8 points per side.

    /tmp/segrs-refenv/bin/python tools/gen_sam2_fixtures.py
"""
import json
import os

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from safetensors.torch import save_file

import sam2.utils.misc as sam2_misc
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from fixture_hash import uniform  # tools/fixture_hash.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "sam2")
DATA = os.path.join(HERE, "..", "..", "shared", "data", "sam_demo_images")
STRIDE = {"image_embed": 61, "high_res_0": 257, "high_res_1": 127, "pos_enc": 61, "low_res": 7}


def value_range(key, shape):
    """(offset, scale) of a key's values: u * scale + offset."""
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) == 1 and "norm" in key and leaf == "weight":
        return 1.0, 0.2
    if len(shape) == 1 and leaf == "weight":  # LayerNorm2d in the decoder / prompt encoder
        return 1.0, 0.2
    if leaf == "bias":
        if key == "sam_mask_decoder.iou_prediction_head.layers.2.bias":
            return 2.0, 0.5
        return 0.0, 0.1
    if key.endswith("positional_encoding_gaussian_matrix"):
        return 0.0, 1.7
    if key.startswith("image_encoder.trunk.pos_embed"):
        return 0.0, 0.5
    if leaf == "weight" and len(shape) >= 2 and "output_hypernetworks_mlps" in key and ".layers.2." in key:
        fan_in = int(np.prod(shape[1:]))
        return 0.0, 4.0 * float(np.sqrt(3.0 / fan_in))
    if len(shape) >= 2 and leaf == "weight" and not key.endswith("_token.weight") and "point_embed" not in key:
        fan_in = int(np.prod(shape[1:]))
        return 0.0, float(np.sqrt(3.0 / fan_in))
    return 0.0, 1.0  # tokens, point embeddings, no_mem_embed and the other free parameters


def cc_8(mask):
    """`get_connected_components` (8-connectivity) with OpenCV, for the CPU."""
    m = mask.to(torch.uint8).cpu().numpy()
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m[i, 0], connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA].copy()
        area[0] = 0
        labels[i, 0] = lab
        counts[i, 0] = area[lab]
    return torch.from_numpy(labels), torch.from_numpy(counts)


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def hashed_model():
    """The official SAM 2.1 Hiera-T with every tensor from the hash (and the key list)."""
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu")
    sd = model.state_dict()
    keys = []
    with torch.no_grad():
        for seed, (k, t) in enumerate(sd.items(), start=1):
            off, sc = value_range(k, list(t.shape))
            v = uniform(seed, t.numel()) * np.float32(sc) + np.float32(off)
            t.copy_(torch.from_numpy(v).reshape(t.shape))
            keys.append({"key": k, "shape": list(t.shape), "seed": seed, "offset": off, "scale": sc})
    model.load_state_dict(sd)
    return model, keys


def video_parts(model):
    """The memory encoder and the memory attention on inputs from the hash (seeds 9001-9005):
    image features [256, 64, 64], a mask for memory [1024, 1024] (uniform * 20, as the scaled
    logits), the current frame [4096, 256], two memory frames plus 16 object-pointer tokens
    [8208, 64] and their positions (uniform * 0.5); three decoder tokens (seed 9006) through the
    pointer MLP and the temporal encodings of distances 1, 2, -3 (of at most 15). Strided samples
    of the large outputs."""
    g = lambda seed, shape, scale=1.0: torch.from_numpy(uniform(seed, int(np.prod(shape))) * np.float32(scale)).reshape(shape)
    pix = g(9001, (1, 256, 64, 64))
    mask = g(9002, (1, 1, 1024, 1024), 20.0)
    curr = g(9003, (4096, 1, 256))
    memory = g(9004, (2 * 4096 + 16, 1, 64))
    memory_pos = g(9005, (2 * 4096 + 16, 1, 64), 0.5)
    with torch.no_grad():
        enc = model.memory_encoder(pix, mask, skip_mask_sigmoid=True)
        curr_pos = model.image_encoder.neck.position_encoding(pix)  # [1, 256, 64, 64]
        curr_pos = curr_pos.flatten(2).permute(2, 0, 1)
        out = model.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=memory, memory_pos=memory_pos,
                                     num_obj_ptr_tokens=16)
    from sam2.modeling.sam2_utils import get_1d_sine_pe
    with torch.no_grad():
        tokens = g(9006, (3, 256))
        ptrs = model.obj_ptr_proj(tokens)
        tpos = model.obj_ptr_tpos_proj(get_1d_sine_pe(torch.tensor([1, 2, -3]) / 15, dim=256))
    # The heads on a frame (one click where the object score is positive, one where it is not),
    # a disc mask as the output, and memories.
    bf, s0, s1 = g(9101, (1, 256, 64, 64)), g(9102, (1, 32, 256, 256)), g(9103, (1, 64, 128, 128))
    pts = {"point_coords": torch.tensor([[[700.0, 100.0]]]), "point_labels": torch.tensor([[1]], dtype=torch.int32)}
    absent = {"point_coords": torch.tensor([[[512.0, 512.0]]]), "point_labels": torch.tensor([[1]], dtype=torch.int32)}
    yy, xx = torch.meshgrid(torch.arange(1024), torch.arange(1024), indexing="ij")
    disc = (((yy - 500) ** 2 + (xx - 420) ** 2) < 200 ** 2).float()[None, None]
    with torch.no_grad():
        heads = model._forward_sam_heads(bf, point_inputs=pts, high_res_features=[s0, s1], multimask_output=True)
        heads_absent = model._forward_sam_heads(bf, point_inputs=absent, high_res_features=[s0, s1],
                                                multimask_output=True)
        as_out = model._use_mask_as_output(bf, [s0, s1], disc)
        model.binarize_mask_from_pts_for_mem_enc = True
        rows = bf.flatten(2).permute(2, 0, 1)
        # Binarised at 0 for the memory: from the disc as logits of +-20 (a mask from the heads
        # has pixels within rounding of 0, whose side is not the memory encoder's to decide).
        mem1, _ = model._encode_new_memory([rows], [(64, 64)], disc * 40.0 - 20.0, heads[6],
                                           is_mask_from_pts=True)
        mem2, _ = model._encode_new_memory([rows], [(64, 64)], heads[4], torch.tensor([[-1.0]]), is_mask_from_pts=False)
        model.binarize_mask_from_pts_for_mem_enc = False
    t = {
        "heads.low_res": heads[0][0].flatten()[::7].contiguous(),
        "heads.ious": heads[2][0].contiguous(),
        "heads.high_res": heads[4][0, 0].flatten()[::101].contiguous(),
        "heads.obj_ptr": heads[5][0].contiguous(),
        "heads.score": heads[6][0].contiguous(),
        "heads_absent.score": heads_absent[6][0].contiguous(),
        "mask_out.low_res": as_out[0][0, 0].flatten()[::7].contiguous(),
        "mask_out.obj_ptr": as_out[5][0].contiguous(),
        "mask_out.score": as_out[6][0].contiguous(),
        "memory.from_points": mem1[0].flatten()[::13].contiguous(),
        "memory.absent": mem2[0].flatten()[::13].contiguous(),
        "object_pointers.ptrs": ptrs.contiguous(),
        "object_pointers.tpos": tpos.contiguous(),
        "memory_encoder.features": enc["vision_features"][0].flatten()[::13].contiguous(),
        "memory_encoder.pos": enc["vision_pos_enc"][0][0].flatten()[::13].contiguous(),
        "memory_attention.out": out[:, 0].flatten()[::29].contiguous(),
    }
    # Memory selection and conditioning (`_prepare_memory_conditioned_features`): stored frames
    # from the hash (memory features in bfloat16 as the video predictor keeps them), forward from
    # frame 6 (conditioning frame 0, tracked frames 3-5) and in reverse from frame 2
    # (conditioning frame 6, tracked frames 3-4), 10 frames.
    def stored(f):
        return {"maskmem_features": g(9200 + f, (1, 64, 64, 64)).to(torch.bfloat16),
                "maskmem_pos_enc": [g(9220 + f, (1, 64, 64, 64), 0.5)],
                "obj_ptr": g(9240 + f, (1, 256))}
    curr = g(9260, (4096, 1, 256))
    with torch.no_grad():
        pos = model.image_encoder.neck.position_encoding(bf).flatten(2).permute(2, 0, 1)
        for name, frame, cond, non_cond, rev in [("forward", 6, [0], [3, 4, 5], False),
                                                 ("reverse", 2, [6], [3, 4], True)]:
            od = {"cond_frame_outputs": {f: stored(f) for f in cond},
                  "non_cond_frame_outputs": {f: stored(f) for f in non_cond}}
            out = model._prepare_memory_conditioned_features(
                frame_idx=frame, is_init_cond_frame=False, current_vision_feats=[curr],
                current_vision_pos_embeds=[pos], feat_sizes=[(64, 64)], output_dict=od, num_frames=10,
                track_in_reverse=rev)
            t[f"condition.{name}"] = out[0].flatten()[::29].contiguous()
    save_file(t, os.path.join(OUT, "video_parts.safetensors"))


def pillow_bicubic():
    """Pillow's default `Image.resize` filter (BICUBIC), with which the video predictor loads
    frames: the reduced photo up, down, and to a shape where Pillow 13 runs the vertical pass
    first. Stored as uint8."""
    img = Image.open(os.path.join(OUT, "dog_small.png")).convert("RGB")
    t = {}
    for name, size in [("up", (256, 180)), ("down", (97, 61)), ("vertical_first", (230, 40))]:
        t[f"bicubic.{name}"] = torch.from_numpy(np.array(img.resize(size))).contiguous()
    save_file(t, os.path.join(OUT, "pillow_bicubic.safetensors"))


def variant_keys():
    """The trunk keys and shapes of every official config (2.1 and 2.0), for variant detection."""
    out = {}
    for version, prefix in [("sam2.1", "configs/sam2.1/sam2.1_hiera_"), ("sam2", "configs/sam2/sam2_hiera_")]:
        for size in ["t", "s", "b+", "l"]:
            m = build_sam2(f"{prefix}{size}.yaml", ckpt_path=None, device="cpu")
            out[f"{version}_{size}"] = {k: list(v.shape) for k, v in m.state_dict().items()
                                        if k.startswith("image_encoder.trunk.") or k == "no_obj_embed_spatial"}
            del m
    with open(os.path.join(OUT, "variant_keys.json"), "w") as f:
        json.dump(out, f)


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    variant_keys()
    pillow_bicubic()
    model, keys = hashed_model()
    torch.save({"model": model.state_dict()}, "/tmp/segrs-sam2-tiny.pt")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "keys_t.json"), "w") as f:
        json.dump(keys, f)

    captured = {}
    model.sam_mask_decoder.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("obj", out[3].detach().clone()))
    sam2_misc.get_connected_components = cc_8

    tensors, expected = {}, {"photos": []}
    predictor = SAM2ImagePredictor(model)
    cleaner = SAM2ImagePredictor(model, max_hole_area=40.0, max_sprinkle_area=20.0)
    for name in ["dog", "truck"]:
        img = np.array(Image.open(os.path.join(DATA, f"{name}.jpg")).convert("RGB"))
        h, w = img.shape[:2]
        predictor.set_image(img)
        feats = predictor._features
        tensors[f"{name}.image_embed"] = feats["image_embed"][0].flatten()[::STRIDE["image_embed"]].contiguous()
        tensors[f"{name}.high_res_0"] = feats["high_res_feats"][0][0].flatten()[::STRIDE["high_res_0"]].contiguous()
        tensors[f"{name}.high_res_1"] = feats["high_res_feats"][1][0].flatten()[::STRIDE["high_res_1"]].contiguous()
        with torch.no_grad():
            pos = model.image_encoder.neck.position_encoding(feats["image_embed"])
        tensors[f"{name}.pos_enc"] = pos[0].flatten()[::STRIDE["pos_enc"]].contiguous()
        px, py = w * 0.45, h * 0.55
        box = [w * 0.2, h * 0.25, w * 0.75, h * 0.9]
        prompts = [
            ("point", dict(point_coords=np.array([[px, py]]), point_labels=np.array([1]), multimask_output=True)),
            ("point_single", dict(point_coords=np.array([[px, py]]), point_labels=np.array([1]), multimask_output=False)),
            ("points", dict(point_coords=np.array([[px, py], [w * 0.1, h * 0.1]]), point_labels=np.array([1, 0]),
                            multimask_output=False)),
            ("box", dict(box=np.array(box), multimask_output=False)),
            ("box_point", dict(box=np.array(box), point_coords=np.array([[px, py]]), point_labels=np.array([0]),
                               multimask_output=False)),
        ]
        entries = []
        for pname, kw in prompts:
            masks, scores, low = predictor.predict(**kw)
            entries.append((pname, kw, masks, scores, low, captured["obj"]))
        # mask input: the best low-res logits of the first multimask prediction
        _, _, _, s0, l0, _ = entries[0]
        mi = l0[int(np.argmax(s0))][None]
        kw = dict(point_coords=np.array([[px, py]]), point_labels=np.array([1]), mask_input=mi, multimask_output=False)
        masks, scores, low = predictor.predict(**kw)
        entries.append(("mask_input", kw, masks, scores, low, captured["obj"]))
        tensors[f"{name}.mask_input.input"] = torch.from_numpy(mi[0]).contiguous()
        cleaner.set_image(img)
        kw = dict(point_coords=np.array([[px, py]]), point_labels=np.array([1]), multimask_output=True)
        masks, scores, low = cleaner.predict(**kw)
        entries.append(("cleaned", kw, masks, scores, low, captured["obj"]))
        photo = {"name": name, "size": [h, w], "prompts": []}
        for pname, kw, masks, scores, low, obj in entries:
            tensors[f"{name}.{pname}.low_res"] = torch.from_numpy(low).flatten()[::STRIDE["low_res"]].contiguous()
            photo["prompts"].append({
                "name": pname,
                "points": kw.get("point_coords", np.zeros((0, 2))).tolist(),
                "labels": kw.get("point_labels", np.zeros(0)).astype(int).tolist(),
                "box": kw["box"].tolist() if "box" in kw else None,
                "multimask": kw["multimask_output"],
                "mask_input": "mask_input" in kw,
                "scores": scores.tolist(),
                "object_score": float(obj.flatten()[0]),
                "masks": [rle(m > 0) for m in masks],
                "mask_pixels": int(sum((m > 0).sum() for m in masks)),
            })
        if name == "dog":
            # The host hole / sprinkle removal alone, on one plane of the reference's logits.
            plane = torch.from_numpy(entries[-1][4][0]).contiguous()
            tensors["fill.input"] = plane
            filled = cleaner._transforms.postprocess_masks(plane[None, None], (plane.shape[0], plane.shape[1]))
            expected["fill"] = rle(filled[0, 0].numpy() > 0)
        expected["photos"].append(photo)
        print(name, [(p["name"], [round(s, 4) for s in p["scores"]], p["mask_pixels"]) for p in photo["prompts"]])

    # The automatic generator on a reduced grid and a reduced photo (stored as PNG). Random
    # weights give masks spread over the whole image, whose boxes all coincide: box NMS is
    # turned off (threshold 1.0) so that the records are many.
    small = Image.open(os.path.join(DATA, "dog.jpg")).convert("RGB").resize((240, 160), Image.BILINEAR)
    small.save(os.path.join(OUT, "dog_small.png"))
    img = np.array(small)
    amg_cfg = dict(points_per_side=4, points_per_batch=6, pred_iou_thresh=0.8, stability_score_thresh=0.6,
                   box_nms_thresh=1.0, use_m2m=True, output_mode="coco_rle")
    gen = SAM2AutomaticMaskGenerator(model, **amg_cfg)
    recs = gen.generate(img)
    for r in recs:
        r["segmentation"]["counts"] = r["segmentation"]["counts"].decode() if isinstance(
            r["segmentation"]["counts"], bytes) else r["segmentation"]["counts"]
    expected["amg"] = {"image": "dog_small.png", "config": amg_cfg, "records": recs}
    print("amg", len(recs), "records")
    expected["strides"] = STRIDE
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    video_parts(model)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
