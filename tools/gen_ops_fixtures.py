"""Fixtures for the host engine's kernels (src/ops), each against the PyTorch / torchvision /
SAM 2 function it reproduces. Small random inputs; outputs saved to
tests/fixtures/ops/ops.safetensors (read by tests/all/ops_parity.rs).

    /tmp/segrs-refenv/bin/python tools/gen_ops_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
import torchvision.ops as tvo
from safetensors.torch import save_file
from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

torch.manual_seed(0)
out = {}


def put(name, t):
    out[name] = t.detach().contiguous().float()


# Convolutions: (name, cin, cout, k, stride, pad, groups, h, w)
convs = [
    ("conv3x3_even", 5, 6, 3, 1, 1, 1, 8, 10),  # Winograd
    ("conv3x3_odd", 5, 6, 3, 1, 1, 1, 7, 9),  # im2col
    ("conv3x3_wide", 40, 6, 3, 1, 1, 1, 9, 11),  # Winograd F(4x4, 3x3), partial tiles
    ("conv3x3_wide_even", 48, 8, 3, 1, 1, 1, 8, 12),  # Winograd F(4x4, 3x3)
    ("conv3x3_s2", 4, 6, 3, 2, 1, 1, 9, 10),
    ("conv7x7_s2", 3, 4, 7, 2, 3, 1, 13, 16),  # ResNet stem
    ("conv1x1", 7, 5, 1, 1, 0, 1, 6, 5),
    ("conv1x1_s2", 6, 4, 1, 2, 0, 1, 7, 8),  # ResNet downsample
    ("conv2x2_s2", 2, 4, 2, 2, 0, 1, 8, 6),  # SAM mask downscaling
    ("conv_dw3x3", 6, 6, 3, 1, 1, 6, 7, 8),
    ("conv_dw3x3_s2", 6, 6, 3, 2, 1, 6, 9, 8),
]
for name, cin, cout, k, s, p, g, h, w in convs:
    x = torch.randn(1, cin, h, w)
    wt = torch.randn(cout, cin // g, k, k) * 0.3
    b = torch.randn(cout)
    put(f"{name}.x", x[0])
    put(f"{name}.w", wt)
    put(f"{name}.b", b)
    put(f"{name}.y", F.conv2d(x, wt, b, stride=s, padding=p, groups=g)[0])
    put(f"{name}.y_relu", F.relu(F.conv2d(x, wt, b, stride=s, padding=p, groups=g))[0])

# BatchNorm folded into a convolution (eval mode)
x = torch.randn(1, 4, 6, 6)
conv = torch.nn.Conv2d(4, 5, 3, padding=1, bias=False)
bn = torch.nn.BatchNorm2d(5).eval()
with torch.no_grad():
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
put("convbn.x", x[0])
put("convbn.w", conv.weight)
for k in ["weight", "bias", "running_mean", "running_var"]:
    put(f"convbn.bn.{k}", getattr(bn, k))
put("convbn.y", bn(conv(x))[0])

# Transposed convolution 2x2 stride 2
x = torch.randn(1, 6, 4, 5)
ct = torch.nn.ConvTranspose2d(6, 3, 2, stride=2)
put("convt.x", x[0])
put("convt.w", ct.weight)
put("convt.b", ct.bias)
put("convt.y", ct(x)[0])

# Pooling: (name, k, stride, pad, h, w)
for name, k, s, p, h, w in [("pool2", 2, 2, 0, 8, 6), ("pool3s2", 3, 2, 1, 9, 10), ("pool1s2", 1, 2, 0, 7, 9)]:
    x = torch.randn(1, 3, h, w)
    put(f"{name}.x", x[0])
    put(f"{name}.y", F.max_pool2d(x, k, s, p)[0])

# Resizing
x = torch.randn(1, 3, 7, 9)
put("resize.x", x[0])
put("resize.bilinear_up", F.interpolate(x, size=(12, 17), mode="bilinear", align_corners=False)[0])
put("resize.bilinear_down", F.interpolate(x, size=(4, 5), mode="bilinear", align_corners=False)[0])
put("resize.bilinear_ac", F.interpolate(x, size=(12, 5), mode="bilinear", align_corners=True)[0])
put("resize.nearest_up", F.interpolate(x, size=(14, 18), mode="nearest")[0])
put("resize.nearest_odd", F.interpolate(x, size=(10, 4), mode="nearest")[0])
big = torch.randn(1, 2, 23, 31)
put("resize.aa_x", big[0])
put("resize.aa_down", F.interpolate(big, size=(7, 10), mode="bilinear", align_corners=False, antialias=True)[0])

# Element-wise and normalisations
x = torch.randn(5, 16) * 3
put("act.x", x)
put("act.gelu", F.gelu(x))
put("act.gelu_tanh", F.gelu(x, approximate="tanh"))
put("act.sigmoid", torch.sigmoid(x))
put("act.softmax", torch.softmax(x, dim=-1))
lw, lb = torch.randn(16), torch.randn(16)
put("ln.w", lw)
put("ln.b", lb)
put("ln.y", F.layer_norm(x, (16,), lw, lb, 1e-5))
x2 = torch.randn(1, 6, 5, 7)
w2, b2 = torch.randn(6), torch.randn(6)
u = x2.mean(1, keepdim=True)
s = (x2 - u).pow(2).mean(1, keepdim=True)
put("ln2d.x", x2[0])
put("ln2d.w", w2)
put("ln2d.b", b2)
put("ln2d.y", (w2[:, None, None] * ((x2 - u) / torch.sqrt(s + 1e-6)) + b2[:, None, None])[0])

# Multi-head attention: q [nq, heads * d], k/v [nk, heads * d]
heads, d, nq, nk = 3, 8, 10, 13
q, k, v = torch.randn(nq, heads * d), torch.randn(nk, heads * d), torch.randn(nk, heads * d)
split = lambda t: t.view(t.shape[0], heads, d).transpose(0, 1)  # [heads, n, d]
put("attn.q", q)
put("attn.k", k)
put("attn.v", v)
put("attn.y", F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(0, 1).reshape(nq, heads * d))

# Axial rotary embeddings (SAM 2): a 4x3 grid, keys repeating it twice
d, end_x, end_y = 16, 4, 3
cis = compute_axial_cis(d, end_x, end_y, 10000.0)
xq = torch.randn(1, 1, end_x * end_y, d)
xk = torch.randn(1, 1, 2 * end_x * end_y, d)
rq, rk = apply_rotary_enc(xq, xk, cis, repeat_freqs_k=True)
put("rope.q", xq[0, 0])
put("rope.k", xk[0, 0])
put("rope.q_out", rq[0, 0])
put("rope.k_out", rk[0, 0])

# Boxes: random boxes, some overlapping heavily
centers = torch.rand(40, 2) * 50
sizes = torch.rand(40, 2) * 30 + 2
boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
scores = torch.rand(40)
idxs = torch.randint(0, 3, (40,))
put("boxes.boxes", boxes)
put("boxes.scores", scores)
put("boxes.idxs", idxs.float())
put("boxes.iou", tvo.box_iou(boxes[:7], boxes[7:12]))
put("boxes.nms", tvo.nms(boxes, scores, 0.5).float())
put("boxes.batched_nms", tvo.batched_nms(boxes, scores, idxs, 0.5).float())

# RoIAlign: features [c, h, w] at 1/4 scale, boxes in image coordinates
feat = torch.randn(1, 3, 12, 14)
rois = torch.tensor(
    [[0.0, 3.0, 5.0, 30.0, 40.0], [0.0, -4.0, 10.0, 20.5, 13.0], [0.0, 40.0, 30.0, 60.0, 49.0], [0.0, 8.0, 8.0, 9.0, 9.5]]
)
put("roi.x", feat[0])
put("roi.boxes", rois[:, 1:])
put("roi.y_s2", tvo.roi_align(feat, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=False))
put("roi.y_adaptive", tvo.roi_align(feat, rois, (5, 4), spatial_scale=0.25, sampling_ratio=-1, aligned=False))
put("roi.y_aligned", tvo.roi_align(feat, rois, (6, 6), spatial_scale=0.25, sampling_ratio=2, aligned=True))

# Box coding (Mask R-CNN's box head weights) with some large dw/dh that hit the clamp
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.roi_heads import paste_masks_in_image

ref = boxes[:12].clone()
deltas = torch.randn(12, 4) * 3
deltas[0, 2] = 80.0
deltas[1, 3] = 70.0
put("coder.reference", ref)
put("coder.deltas", deltas)
put("coder.boxes", BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(deltas, ref))

# Mask paste-back: 28x28 probabilities into a 37x45 image, boxes partly outside
masks = torch.rand(5, 1, 28, 28)
pboxes = torch.tensor(
    [[3.2, 4.7, 20.9, 30.1], [-5.0, -3.5, 12.0, 9.0], [30.5, 20.2, 60.0, 50.0], [10.0, 10.0, 10.4, 10.6], [0.0, 0.0, 45.0, 37.0]]
)
put("paste.masks", masks[:, 0])
put("paste.boxes", pboxes)
put("paste.out", paste_masks_in_image(masks, pboxes, (37, 45))[:, 0])

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "ops", "ops.safetensors")
# Bicubic resizing (Hiera's background position embedding) and attention over many positions
# (taken in query blocks); a generator of their own keeps the values above unchanged.
g = torch.Generator().manual_seed(7)
pe = torch.randn(1, 4, 7, 7, generator=g)
put("bicubic.x", pe[0])
put("bicubic.up", F.interpolate(pe, size=(32, 24), mode="bicubic")[0])
put("bicubic.down", F.interpolate(pe, size=(5, 3), mode="bicubic")[0])
heads, d, nq, nk = 2, 16, 700, 600
q = torch.randn(nq, heads * d, generator=g)
k = torch.randn(nk, heads * d, generator=g)
v = torch.randn(nk, heads * d, generator=g)
put("attn_large.q", q)
put("attn_large.k", k)
put("attn_large.v", v)
put("attn_large.y", F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(0, 1).reshape(nq, heads * d))

save_file(out, path, metadata={"torch": torch.__version__})
print(f"wrote {len(out)} tensors to {path}")
