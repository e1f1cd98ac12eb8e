#!/usr/bin/env python3
"""The CPU runtimes users deploy with, for `cargo bench --bench sam` and `--bench unet`: exports the
benchmark's models (the .pth files the PyTorch side saved in DIR, so the same random weights) to
ONNX with PyTorch's TorchScript exporter (opset 17) and times them in ONNX Runtime and in OpenVINO,
f32 and bf16, with the same thread count and inputs as the rest of the benchmark.

  sam:  the SAM ViT-B and MobileSAM vit_t image encoders at 1x3x1024x1024 (DIR/vit_b.pth,
        DIR/vit_t.pth, input from DIR/io.safetensors), and ViT-B's prompt encoder + mask decoder
        per single-point prompt (multimask, the benchmark's 16 points and PyTorch's embedding).
  unet: the classic U-Net forward at 1x3x256x256 (DIR/unet_classic.pth).

OpenVINO's bf16 runs only where the CPU has bf16 arithmetic (AVX512_BF16 or AMX); elsewhere the
row says so rather than time OpenVINO's silent fall-back to f32. Each runtime's output is compared
with PyTorch's (relative L2).

usage: bench_runtimes.py sam|unet THREADS REPEATS DIR   (prints one JSON line)
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

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(n, f):
    f()
    ts = []
    for _ in range(max(1, n)):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


class Runtimes:
    """ONNX Runtime and OpenVINO sessions for one exported model."""

    def __init__(self, threads):
        import onnxruntime as ort
        import openvino as ov

        self.ort, self.ov, self.threads = ort, ov, threads
        self.core = ov.Core()
        caps = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.bf16 = "BF16" in caps

    def versions(self):
        return {"ort_version": self.ort.__version__, "openvino_version": self.ov.__version__.split("-")[0],
                "openvino_bf16": self.bf16}

    def sessions(self, path):
        """(name, run(feed) -> list of outputs) for each runtime and precision."""
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        sess = self.ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        yield "onnxruntime", lambda feed: sess.run(None, feed)
        for precision in ["f32", "bf16"]:
            if precision == "bf16" and not self.bf16:
                continue
            compiled = self.core.compile_model(path, "CPU", {
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
            })
            req = compiled.create_infer_request()

            def run(feed, req=req, compiled=compiled):
                res = req.infer(feed)
                return [res[o] for o in compiled.outputs]

            yield f"openvino_{precision}", run


def measure(rt, path, feeds, want, repeats):
    """Times every runtime on `feeds` (one run = all feeds) and compares its first outputs."""
    out = {}
    for name, run in rt.sessions(path):
        got = [run(f)[0] for f in feeds]
        out[name] = timed(repeats, lambda: [run(f) for f in feeds]) / len(feeds)
        out[name + "_rel_l2"] = rel_l2(np.concatenate([g.ravel() for g in got]),
                                       np.concatenate([w.ravel() for w in want]))
    return out


def export(module, args, path, inputs, outputs):
    if not os.path.exists(path):
        torch.onnx.export(module, args, path, opset_version=17, dynamo=False,
                          input_names=inputs, output_names=outputs)


class PointDecoder(torch.nn.Module):
    """SAM's prompt encoder + mask decoder for one point prompt, multimask (low-res logits)."""

    def __init__(self, sam):
        super().__init__()
        self.sam = sam

    def forward(self, embedding, coords, labels):
        pe = self.sam.prompt_encoder
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
        return self.sam.mask_decoder(image_embeddings=embedding, image_pe=pe.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=True)


def sam(rt, threads, repeats, out):
    from safetensors.torch import load_file
    from segment_anything import sam_model_registry
    from mobile_sam import sam_model_registry as mobile_registry

    io = load_file(os.path.join(out, "io.safetensors"))
    x = io["input"]
    res = {}
    for name, reg in [("vit_b", sam_model_registry), ("vit_t", mobile_registry)]:
        model = reg[name]()
        model.load_state_dict(torch.load(os.path.join(out, f"{name}.pth")))
        model.eval()
        path = os.path.join(out, f"{name}_encoder.onnx")
        with torch.inference_mode():
            export(model.image_encoder, (x,), path, ["image"], ["embedding"])
        res[f"{name}_encoder"] = measure(rt, path, [{"image": x.numpy()}], [io[f"{name}.embedding"].numpy()],
                                         repeats)
        if name != "vit_b":
            continue
        emb = io["vit_b.embedding"]
        pts = io["vit_b.points"].reshape(16, 1, 1, 2)
        one = torch.ones(1, 1, dtype=torch.int64)
        path = os.path.join(out, "vit_b_decoder.onnx")
        with torch.inference_mode():
            export(PointDecoder(model), (emb, pts[0], one), path, ["embedding", "coords", "labels"],
                   ["low_res", "iou"])
        feeds = [{"embedding": emb.numpy(), "coords": pts[i].numpy(), "labels": one.numpy()} for i in range(16)]
        want = [io["vit_b.low_res"][i:i + 1].numpy() for i in range(16)]
        res["vit_b_decoder"] = measure(rt, path, feeds, want, 10)
    return res


def unet(rt, threads, repeats, out):
    sys.path.insert(0, HERE)
    from gen_unet_fixtures import UNet

    model = UNet(3, 21)
    model.load_state_dict(torch.load(os.path.join(out, "unet_classic.pth")))
    model.eval()
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    path = os.path.join(out, "unet_classic.onnx")
    with torch.no_grad():
        want = model(x).numpy()
        export(model, (x,), path, ["image"], ["logits"])
    return {"unet_forward": measure(rt, path, [{"image": x.numpy()}], [want], repeats)}


def main():
    which, threads, repeats, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(threads)
    rt = Runtimes(threads)
    res = rt.versions()
    res.update({"sam": sam, "unet": unet}[which](rt, threads, repeats, out))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
