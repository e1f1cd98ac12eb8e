#!/usr/bin/env python3
"""Reference weight maps for segrs' `losses::border_weights` (the U-Net paper's eq. 2) with
numpy / scipy, the formula written out directly: w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / 2 sigma^2)
on background pixels, d1 / d2 the Euclidean distances (scipy's exact distance transform, over
the whole image) to the nearest and second nearest object, objects = 4-connected components of
the cell interiors; w_c the balanced class weight n / (k n_c). On 160x160 crops of ISBI labels.

usage: gen_border_weight_fixtures.py ISBI_DIR OUT.safetensors
       (needs numpy, scipy, pillow, safetensors)
"""
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from scipy import ndimage

W0, SIGMA = 10.0, 5.0
CROPS = [(25, 0, 0), (27, 200, 160)]  # image, top, left


def weight_map(labels):
    n = labels.size
    classes, counts = np.unique(labels, return_counts=True)
    wc = np.zeros(2)
    wc[classes] = n / (len(classes) * counts)
    w = wc[labels].astype(np.float64)
    objects, k = ndimage.label(labels == 1)
    if k >= 2:
        d = np.stack([ndimage.distance_transform_edt(objects != i) for i in range(1, k + 1)])
        d.sort(axis=0)
        sep = W0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * SIGMA**2))
        w += np.where(labels == 0, sep, 0.0)
    return w


def main():
    isbi, out = sys.argv[1], sys.argv[2]
    tensors = {}
    for k, top, left in CROPS:
        full = np.asarray(Image.open(f"{isbi}/train/label/{k}.png"))
        labels = (full[top : top + 160, left : left + 160] == 255).astype(np.int64)
        tensors[f"labels_{k}"] = labels.astype(np.float32)
        tensors[f"weights_{k}"] = weight_map(labels).astype(np.float32)
    save_file(tensors, out)


if __name__ == "__main__":
    main()
