#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench sam2_video`: the official `SAM2VideoPredictor` with SAM 2.1
Hiera-T (random weights, saved with torch.save({"model": state_dict}) as the official files are,
so that segrs loads the very same weights), on the first frames of the SAM 2 bedroom video:

* per-frame tracking time at 1024 for one object (a click) and three objects (a click, two
  clicks, a box), the first frame (prompts) left out;
* peak resident memory of a whole tracking run over 50 and over 200 frames, for the reference
  (a child process running `init_state` + `propagate_in_video`) and for segrs (the `segrs sam
  video` binary given as SEGRS_BIN), each its peak VmHWM polled from /proc; input size 256 so that
  200 frames finish in minutes on a CPU.

usage: bench_sam2_video_torch.py THREADS OUTDIR FRAMES_DIR NFRAMES SEGRS_BIN   (prints one JSON line)
       bench_sam2_video_torch.py rss THREADS CHECKPOINT FRAMES_DIR SIZE   (the child)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
import torch

from sam2.build_sam import build_sam2_video_predictor

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
PROMPTS = [
    (1, dict(points=[[210.0, 350.0]], labels=[1])),
    (2, dict(points=[[400.0, 150.0], [460.0, 300.0]], labels=[1, 0])),
    (3, dict(box=[300.0, 0.0, 500.0, 400.0])),
]


def predictor(size, ckpt=None):
    over = [f"++model.image_size={size}"]
    p = build_sam2_video_predictor(CONFIG, ckpt_path=None, device="cpu", hydra_overrides_extra=over)
    if ckpt:
        p.load_state_dict(torch.load(ckpt, map_location="cpu")["model"])
    return p.eval()


def folder(src, n):
    d = tempfile.mkdtemp(prefix="segrs-bench-video-")
    for name in sorted(os.listdir(src))[:n]:
        os.symlink(os.path.join(src, name), os.path.join(d, name))
    return d


def track(pred, frames, objects):
    """Per-frame seconds (frames after the first) and per-frame object scores."""
    with torch.inference_mode():
        s = pred.init_state(frames)
        for obj_id, kw in PROMPTS[:objects]:
            pred.add_new_points_or_box(s, 0, obj_id, **kw)
        times, scores = [], []
        t = time.perf_counter()
        for f, ids, _ in pred.propagate_in_video(s):
            now = time.perf_counter()
            if f > 0:
                times.append(now - t)
            t = now
            scores.append([float((od["cond_frame_outputs"].get(f) or od["non_cond_frame_outputs"][f])
                                 ["object_score_logits"].flatten()[0])
                           for od in s["output_dict_per_obj"].values()])
    return times, scores


def peak_rss_mb(cmd):
    """The child's VmHWM (peak resident set of its own program, after exec), polled until it
    exits (wait4's ru_maxrss would include the forked copy of this interpreter)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return peak / 1024.0


def main():
    if sys.argv[1] == "rss":
        threads, ckpt, frames, size = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
        torch.set_num_threads(threads)
        pred = predictor(size, ckpt)
        with torch.inference_mode():
            s = pred.init_state(frames)
            pred.add_new_points_or_box(s, 0, 1, **PROMPTS[0][1])
            for _ in pred.propagate_in_video(s):
                pass
        return
    threads, out, src, n, segrs_bin = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    pred = predictor(1024)
    with torch.no_grad():
        for p in pred.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    ckpt = os.path.join(out, "hiera_t.pt")
    torch.save({"model": pred.state_dict()}, ckpt)
    frames = folder(src, n)
    res = {"torch": torch.__version__, "frames": n}
    for objects in [1, 3]:
        times, scores = track(pred, frames, objects)
        res[f"objects_{objects}_frame_s"] = sum(times) / len(times)
        res[f"objects_{objects}_scores"] = scores
    for nf in [50, 200]:
        d = folder(src, nf)
        res[f"rss_torch_{nf}_mb"] = peak_rss_mb([sys.executable, __file__, "rss", str(threads), ckpt, d, "256"])
        o = tempfile.mkdtemp(prefix="segrs-bench-video-out-")
        res[f"rss_segrs_{nf}_mb"] = peak_rss_mb([segrs_bin, "--threads", str(threads), "sam", "video",
                                                 "--checkpoint", ckpt, "--frames", d, "--image-size", "256",
                                                 "--point", "0:1:210,350", "--fill-hole-area", "0",
                                                 "--out", o])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
