"""Reference metric definitions shared by the fixture scripts, reproduced from their published
sources: the DAVIS toolkit's boundary map and F-measure (davis2017-evaluation, with OpenCV
dilation and void pixels) and Boundary IoU's inner band (boundary_iou_api, Cheng et al. 2021)."""
import cv2
import numpy as np
from skimage.morphology import disk


def seg2bmap(seg):
    """DAVIS toolkit boundary map (width/height equal to the mask)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    """DAVIS boundary F-measure of a predicted mask against the ground truth."""
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = seg2bmap(gt_mask * np.logical_not(void_pixels))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), disk(int(bound_pix)).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), disk(int(bound_pix)).astype(np.uint8))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def mask_to_boundary(mask, dilation_ratio=0.02):
    """Boundary IoU's inner band of a uint8 mask."""
    h, w = mask.shape
    img_diag = np.sqrt(h ** 2 + w ** 2)
    dilation = int(round(dilation_ratio * img_diag))
    if dilation < 1:
        dilation = 1
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    kernel = np.ones((3, 3), dtype=np.uint8)
    new_mask_erode = cv2.erode(new_mask, kernel, iterations=dilation)
    return mask - new_mask_erode[1: h + 1, 1: w + 1]


def boundary_iou(gt, dt, dilation_ratio=0.02):
    gb = mask_to_boundary(gt.astype(np.uint8), dilation_ratio)
    db = mask_to_boundary(dt.astype(np.uint8), dilation_ratio)
    inter = ((gb * db) > 0).sum()
    union = ((gb + db) > 0).sum()
    return inter / union
