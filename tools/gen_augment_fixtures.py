#!/usr/bin/env python3
"""Reference warps for segrs' `data::augment` (the U-Net paper's elastic deformation, with a
rotation and zoom), the formulas written out with numpy and the sampling done by scipy:

  - displacement vectors on a 3x3 grid whose outer points sit on the window's corners,
    interpolated per pixel by bicubic convolution (Keys 1981, a = -0.5, indices beyond the grid
    clamped), separably;
  - source coordinate = window origin + centre + R(angle) (p - centre) / zoom + displacement;
  - image sampled by scipy.ndimage.map_coordinates(order=1, mode="mirror") (bilinear, borders
    mirrored without repeating the edge), mask by order=0 (nearest).

On a 160x192 window of ISBI image 25 and its label. The displacement grid is N(0, 10^2) from a
fixed seed and is stored with the result, so the check does not depend on any RNG.

usage: gen_augment_fixtures.py ISBI_TRAIN_DIR OUT.safetensors
       (needs numpy, scipy, pillow, safetensors)
"""
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from scipy import ndimage

H, W, Y0, X0 = 160, 192, 100, 60
ANGLE, ZOOM, SIGMA, G = 0.2, 1.1, 10.0, 3


def keys(t):
    a = -0.5
    t = np.abs(t)
    return np.where(
        t <= 1,
        (a + 2) * t**3 - (a + 3) * t**2 + 1,
        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
    )


def interp_matrix(n, g):
    """(n, g) matrix taking grid values to per-pixel values along one side."""
    m = np.zeros((n, g))
    for i in range(n):
        u = i * (g - 1) / (n - 1)
        base = min(int(np.floor(u)), g - 2)
        for k in (-1, 0, 1, 2):
            m[i, min(max(base + k, 0), g - 1)] += keys(u - (base + k))
    return m


def main():
    isbi, out = sys.argv[1], sys.argv[2]
    image = np.asarray(Image.open(f"{isbi}/image/25.png").convert("L"), dtype=np.float64) / 255.0
    label = (np.asarray(Image.open(f"{isbi}/label/25.png")) >= 128).astype(np.float64)
    rng = np.random.default_rng(0)
    gy = rng.normal(0.0, SIGMA, (G, G))
    gx = rng.normal(0.0, SIGMA, (G, G))
    my, mx = interp_matrix(H, G), interp_matrix(W, G)
    fy, fx = my @ gy @ mx.T, my @ gx @ mx.T
    cy, cx = (H - 1) / 2, (W - 1) / 2
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    sy = Y0 + cy + (c * dy - s * dx) / ZOOM + fy
    sx = X0 + cx + (s * dy + c * dx) / ZOOM + fx
    warped = ndimage.map_coordinates(image, [sy, sx], order=1, mode="mirror")
    warped_label = ndimage.map_coordinates(label, [sy, sx], order=0, mode="mirror")
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    save_file(
        {
            "grid_dy": f32(gy),
            "grid_dx": f32(gx),
            "field_dy": f32(fy),
            "field_dx": f32(fx),
            "image": f32(warped),
            "label": f32(warped_label),
            "params": f32([H, W, Y0, X0, ANGLE, ZOOM]),
        },
        out,
    )


if __name__ == "__main__":
    main()
