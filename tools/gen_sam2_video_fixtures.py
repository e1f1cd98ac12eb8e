"""Parity fixtures for segrs' SAM 2 video tracker against the official `SAM2VideoPredictor`.

The model is the SAM 2.1 Hiera-T of gen_sam2_fixtures.py (every weight from the shared hash,
tests/fixtures/sam2/keys_t.json), built by `build_sam2_video_predictor` (so with the official
video settings: dynamic multimask via stability, binarised memories of prompted frames,
`fill_hole_area=8`) at an input size of 256 instead of 1024 so that the tests run in seconds;
the object-score head's last bias is moved by +4 (object scores mostly positive, some frames
not) so that masks are worth comparing. Holes are filled with OpenCV's 8-connected components
where the reference needs its CUDA extension.

Scenarios (frames of ../shared/data: the DAVIS 2016 blackswan sequence and the SAM 2 bedroom
video, the first 10 frames of each):
  davis_mask       the first frame's annotation as a mask, propagated forward
  davis_reverse    the annotation of frame 7 as a mask, propagated in reverse
  bedroom_clicks   a click on object 1, two clicks on object 2, a box on object 3 (frame 0),
                   a click on object 2 on frame 6 (a second conditioning frame), forward
  bedroom_correct  a click on object 1, forward over 8 frames, a correction click on the
                   tracked frame 3, forward again from frame 4 over 4 frames
Stored per yielded frame and object: the object-score logit and the mask (COCO RLE at the
video's size); per correction, the mask it returns.

    /tmp/segrs-refenv/bin/python tools/gen_sam2_video_fixtures.py
"""
import json
import os
import tempfile

import numpy as np
import torch
from PIL import Image

import sam2.utils.misc as sam2_misc
from sam2.build_sam import build_sam2_video_predictor
from fixture_hash import uniform  # tools/fixture_hash.py
from gen_sam2_fixtures import cc_8, rle, value_range

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "sam2")
DATA = os.path.join(HERE, "..", "..", "shared", "data")
DAVIS = os.path.join(DATA, "davis2016_vos_subset")
BEDROOM = os.path.join(DATA, "sam2_bedroom_video", "frames")
IMAGE_SIZE = 256
FRAMES = 10
OBJ_SCORE_SHIFT = 4.0


def hashed_video_predictor():
    pred = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu",
                                      hydra_overrides_extra=[f"++model.image_size={IMAGE_SIZE}"])
    sd = pred.state_dict()
    with torch.no_grad():
        for seed, (k, t) in enumerate(sd.items(), start=1):
            off, sc = value_range(k, list(t.shape))
            if k == "sam_mask_decoder.pred_obj_score_head.layers.2.bias":
                off += OBJ_SCORE_SHIFT
            v = uniform(seed, t.numel()) * np.float32(sc) + np.float32(off)
            t.copy_(torch.from_numpy(v).reshape(t.shape))
    pred.load_state_dict(sd)
    assert pred.fill_hole_area == 8
    return pred.eval()


def frame_folder(src, names):
    d = tempfile.mkdtemp(prefix="segrs-video-")
    for n in names:
        os.symlink(os.path.join(src, n), os.path.join(d, n))
    return d


def record(frame_idx, obj_ids, logits, scores):
    return {"frame": int(frame_idx),
            "objects": [{"obj_id": int(o), "object_score": None if scores[i] is None else float(scores[i]),
                         "mask": rle(logits[i, 0].numpy() > 0.0)} for i, o in enumerate(obj_ids)]}


def scores_of(pred, state, frame_idx):
    out = []
    for obj_idx in range(len(state["obj_ids"])):
        od = state["output_dict_per_obj"][obj_idx]
        o = od["cond_frame_outputs"].get(frame_idx) or od["non_cond_frame_outputs"].get(frame_idx)
        out.append(float(o["object_score_logits"].flatten()[0]))
    return out


def propagate(pred, state, **kw):
    recs = []
    for f, ids, logits in pred.propagate_in_video(state, **kw):
        recs.append(record(f, ids, logits, scores_of(pred, state, f)))
    return recs


def main():
    sam2_misc.get_connected_components = cc_8
    torch.manual_seed(0)
    pred = hashed_video_predictor()
    davis_names = sorted(os.listdir(os.path.join(DAVIS, "JPEGImages", "480p", "blackswan")))[:FRAMES]
    bedroom_names = sorted(os.listdir(BEDROOM))[:FRAMES]
    davis = frame_folder(os.path.join(DAVIS, "JPEGImages", "480p", "blackswan"), davis_names)
    bedroom = frame_folder(BEDROOM, bedroom_names)
    ann = lambda i: np.array(Image.open(os.path.join(DAVIS, "Annotations", "480p", "blackswan", f"{i:05d}.png"))) > 0
    expected = {"image_size": IMAGE_SIZE, "frames": FRAMES, "obj_score_shift": OBJ_SCORE_SHIFT, "scenarios": {}}
    sc = expected["scenarios"]
    with torch.inference_mode():
        s = pred.init_state(davis)
        pred.add_new_mask(s, 0, 1, ann(0))
        sc["davis_mask"] = {"frames_dir": "davis", "prompts": [{"frame": 0, "obj_id": 1, "mask": "davis:0"}],
                            "reverse": False, "records": propagate(pred, s)}
        s = pred.init_state(davis)
        pred.add_new_mask(s, 7, 1, ann(7))
        sc["davis_reverse"] = {"frames_dir": "davis", "prompts": [{"frame": 7, "obj_id": 1, "mask": "davis:7"}],
                               "reverse": True, "records": propagate(pred, s, reverse=True)}
        prompts = [
            {"frame": 0, "obj_id": 1, "points": [[210.0, 350.0]], "labels": [1]},
            {"frame": 0, "obj_id": 2, "points": [[400.0, 150.0], [460.0, 300.0]], "labels": [1, 0]},
            {"frame": 0, "obj_id": 3, "box": [300.0, 0.0, 500.0, 400.0]},
            {"frame": 6, "obj_id": 2, "points": [[420.0, 160.0]], "labels": [1]},
        ]
        s = pred.init_state(bedroom)
        for p in prompts:
            pred.add_new_points_or_box(s, p["frame"], p["obj_id"], points=p.get("points"),
                                       labels=p.get("labels"), box=p.get("box"))
        sc["bedroom_clicks"] = {"frames_dir": "bedroom", "prompts": prompts, "reverse": False,
                                "records": propagate(pred, s)}
        s = pred.init_state(bedroom)
        pred.add_new_points_or_box(s, 0, 1, points=[[210.0, 350.0]], labels=[1])
        first = propagate(pred, s, max_frame_num_to_track=7)
        f, ids, logits = pred.add_new_points_or_box(s, 3, 1, points=[[250.0, 320.0]], labels=[0],
                                                    clear_old_points=False)
        corr = record(f, ids, logits, [None])
        second = propagate(pred, s, start_frame_idx=4, max_frame_num_to_track=3)
        sc["bedroom_correct"] = {"frames_dir": "bedroom", "first": first, "correction": corr, "second": second}
    for name, v in sc.items():
        for r in v.get("records", []) + v.get("first", []) + v.get("second", []):
            print(name, r["frame"], [round(o["object_score"], 2) for o in r["objects"]],
                  [o["mask"]["counts"][:0] or int(mask_area(o["mask"])) for o in r["objects"]])
    with open(os.path.join(OUT, "video_expected.json"), "w") as f:
        json.dump(expected, f)


def mask_area(r):
    from pycocotools import mask as mask_utils
    return mask_utils.area({"size": r["size"], "counts": r["counts"].encode()})


if __name__ == "__main__":
    main()
