#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench unet`: times the classic U-Net (the class of
tools/gen_unet_fixtures.py) forward at 1x3x256x256 (eval, no_grad) and one training step at
2x3x256x256 (cross-entropy + Adam). Prints one JSON line of median seconds, with the resident
memory before the training steps and the process's peak (MB).

usage: python tools/bench_unet_torch.py THREADS REPEATS [PARITY_DIR]
With PARITY_DIR, also saves the full-size classic U-Net's state_dict (random weights and random
BatchNorm statistics, eval mode) with torch.save, an input and its logits, for the Rust side to
check parity at full size.
"""
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_unet_fixtures import UNet  # noqa: E402

threads, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = UNet(3, 21)


def timed(fn, n):
    fn()  # warm-up
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


model.eval()
x = torch.randn(1, 3, 256, 256)
if len(sys.argv) > 3:
    from gen_unet_fixtures import randomize_bn
    from safetensors.torch import save_file
    out = sys.argv[3]
    os.makedirs(out, exist_ok=True)
    randomize_bn(model, torch.Generator().manual_seed(1))
    model.eval()
    torch.save(model.state_dict(), os.path.join(out, "unet_classic.pth"))
    xp = torch.randn(1, 3, 128, 192, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        save_file({"input": xp.contiguous(), "logits": model(xp).contiguous()}, os.path.join(out, "io.safetensors"))
with torch.no_grad():
    fwd = timed(lambda: model(x), repeats)

model.train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
xb = torch.randn(2, 3, 256, 256)
yb = torch.randint(0, 21, (2, 256, 256))


def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    opt.step()


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576.0


base = rss_mb()
train = timed(step, max(2, repeats // 2))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"torch": torch.__version__, "threads": threads, "forward_s": fwd, "train_step_s": train,
                  "train_base_mb": base, "train_peak_mb": peak}))
