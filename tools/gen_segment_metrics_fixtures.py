#!/usr/bin/env python3
"""Reference numbers for segrs' segment metrics (`metrics::segments`): scikit-image's
foreground-restricted adapted Rand error and variation of information on the ISBI 2012 labels,
each of images 25-29 scored against the label of its neighbouring section (a realistic imperfect
segmentation), with segments = connected components of the cell interiors (value 255) as
scipy.ndimage.label finds them, 4- and 8-connected.

usage: gen_segment_metrics_fixtures.py ISBI_DIR OUT_JSON
       (ISBI_DIR = ../shared/data/isbi2012_membrane; needs numpy, scipy, scikit-image, pillow)
"""
import json
import sys

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information


def fg(isbi, k):
    return np.asarray(Image.open(f"{isbi}/train/label/{k}.png")) == 255


def main():
    isbi, out = sys.argv[1], sys.argv[2]
    pairs = [(k, k + 1 if k < 29 else 24) for k in range(25, 30)]
    structures = {"4": None, "8": np.ones((3, 3), dtype=int)}
    result = {"pairs": [[g, p] for g, p in pairs], "connectivity": {}}
    for name, st in structures.items():
        rows = []
        for g, p in pairs:
            gl, _ = ndimage.label(fg(isbi, g), structure=st)
            pl, _ = ndimage.label(fg(isbi, p), structure=st)
            are, prec, rec = adapted_rand_error(gl, pl)
            split, merge = variation_of_information(gl, pl, ignore_labels=(0,))
            rows.append(
                {
                    "rand_error": float(are),
                    "rand_precision": float(prec),
                    "rand_recall": float(rec),
                    "vi_split": float(split),
                    "vi_merge": float(merge),
                }
            )
        result["connectivity"][name] = rows
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
