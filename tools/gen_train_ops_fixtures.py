"""Fixtures for the training operations (src/autodiff on src/ops): forward outputs and the
gradients of L = sum(y * r) for a random upstream gradient r, from PyTorch's autograd, on
small random batches with odd sizes. Saved to tests/fixtures/ops/train_ops.safetensors (read
by tests/all/train_ops_parity.rs).

    /tmp/segrs-refenv/bin/python tools/gen_train_ops_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}


def put(name, t):
    out[name] = t.detach().contiguous().float()


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


# Stride-1 "same" convolutions: (name, n, cin, cout, k, h, w)
convs = [
    ("conv3x3_odd", 2, 5, 6, 3, 7, 9),  # im2col forward and input gradient
    ("conv3x3_even", 2, 8, 6, 3, 8, 10),  # Winograd F(2x2, 3x3)
    ("conv3x3_wide", 2, 40, 36, 3, 9, 11),  # Winograd F(4x4, 3x3), partial tiles
    ("conv1x1", 3, 7, 5, 1, 6, 5),
]
for name, n, cin, cout, k, h, w in convs:
    x, wt, b = leaf(n, cin, h, w), leaf(cout, cin, k, k, scale=0.3), leaf(cout)
    y = F.conv2d(x, wt, b, padding=k // 2)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for key, v in [("x", x), ("w", wt), ("b", b), ("r", r), ("y", y)]:
        put(f"{name}.{key}", v)
    put(f"{name}.dx", x.grad)
    put(f"{name}.dw", wt.grad)
    put(f"{name}.db", b.grad)

# BatchNorm in training mode, then ReLU
x, g, b = leaf(2, 4, 5, 7), leaf(4), leaf(4)
bn_in = x * 2.0 + 0.5
y = F.relu(F.batch_norm(bn_in, None, None, g, b, training=True, eps=1e-5))
r = torch.randn_like(y)
(y * r).sum().backward()
for key, v in [("x", bn_in), ("gamma", g), ("beta", b), ("r", r), ("y", y)]:
    put(f"bn_relu.{key}", v)
put("bn_relu.dx", x.grad / 2.0)
put("bn_relu.dgamma", g.grad)
put("bn_relu.dbeta", b.grad)
put("bn_relu.mean", bn_in.mean(dim=(0, 2, 3)))
put("bn_relu.var", bn_in.var(dim=(0, 2, 3), unbiased=False))

# 2x2 max pooling, odd size (the last row and column are dropped)
x = leaf(2, 3, 7, 9)
y = F.max_pool2d(x, 2)
r = torch.randn_like(y)
(y * r).sum().backward()
for key, v in [("x", x), ("r", r), ("y", y), ("dx", x.grad)]:
    put(f"max_pool.{key}", v)

# 2x2 stride-2 transposed convolution
x, wt, b = leaf(2, 6, 5, 3), leaf(6, 4, 2, 2, scale=0.3), leaf(4)
y = F.conv_transpose2d(x, wt, b, stride=2)
r = torch.randn_like(y)
(y * r).sum().backward()
for key, v in [("x", x), ("w", wt), ("b", b), ("r", r), ("y", y)]:
    put(f"up_conv.{key}", v)
put("up_conv.dx", x.grad)
put("up_conv.dw", wt.grad)
put("up_conv.db", b.grad)

# Softmax cross-entropy (class weights, ignore index 255) + 0.5 soft Dice (smooth 1), the
# definitions of src/losses: Dice on softmax probabilities and one-hot targets, both zero on
# ignored pixels, 1 - mean over classes of (2 sum pg + s) / (sum p + sum g + s).
n, c, h, w = 2, 4, 5, 7
z = leaf(n, c, h, w, scale=2.0)
labels = torch.randint(0, c, (n, h, w))
labels[0, 0, :3] = 255
labels[1, 4, 5:] = 255
cw = torch.tensor([0.5, 1.0, 2.0, 1.5])
ce = F.cross_entropy(z, labels, weight=cw, ignore_index=255)
valid = (labels != 255).float().unsqueeze(1)
onehot = F.one_hot(labels.clamp(max=c - 1), c).permute(0, 3, 1, 2).float() * valid
p = z.softmax(1) * valid
inter = (p * onehot).sum(dim=(0, 2, 3))
den = p.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
dice = 1 - ((2 * inter + 1) / (den + 1)).mean()
(ce + 0.5 * dice).backward()
put("ce_dice.logits", z)
put("ce_dice.labels", labels.float())
put("ce_dice.class_weights", cw)
put("ce_dice.ce", ce.reshape(1))
put("ce_dice.dice", dice.reshape(1))
put("ce_dice.dlogits", z.grad)

dst = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "ops", "train_ops.safetensors")
save_file(out, dst)
print(f"wrote {len(out)} tensors to {dst}")
