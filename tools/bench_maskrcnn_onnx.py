#!/usr/bin/env python3
"""Mask R-CNN in the CPU runtimes users deploy with: exports the benchmark's torchvision model
(the .pth that `cargo bench --bench maskrcnn` saves with SEGRS_BENCH_KEEP, or a fresh one made
as tools/bench_maskrcnn_torch.py makes it) to ONNX (opset 11, the TorchScript exporter) and times
ONNX Runtime and OpenVINO (f32) on the same 800x1216 photo, same threads.

usage: bench_maskrcnn_onnx.py THREADS REPEATS OUTDIR PHOTO   (prints one JSON line)
"""
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.transforms.functional import to_tensor

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(n, f):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main():
    threads, repeats, out, photo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(threads)
    pth = os.path.join(out, "maskrcnn_v1.pth")
    if not os.path.exists(pth):
        subprocess.run([sys.executable, os.path.join(HERE, "bench_maskrcnn_torch.py"), str(threads), "1", out, photo],
                       check=True, stdout=subprocess.DEVNULL)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    model.load_state_dict(torch.load(pth))
    img = Image.open(photo).convert("RGB").resize((1216, 800), Image.BILINEAR)
    x = to_tensor(img)
    path = os.path.join(out, "maskrcnn.onnx")
    if not os.path.exists(path):
        torch.onnx.export(model, ([x],), path, opset_version=11, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores", "masks"])
    feed = {"image": x.numpy()}
    res = {}
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    res["onnxruntime"], o = timed(repeats, lambda: sess.run(None, feed))
    res["onnxruntime_detections"] = int(len(o[0]))
    res["ort_version"] = ort.__version__
    import openvino as ov
    res["openvino_version"] = ov.__version__
    try:
        core = ov.Core()
        compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        res["openvino_f32"], o = timed(repeats, lambda: req.infer(feed))
    except RuntimeError as e:
        # torchvision's export pastes the masks in an ONNX Loop that OpenVINO cannot convert.
        res["openvino_error"] = str(e).strip().splitlines()[-1]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
