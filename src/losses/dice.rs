//! Soft Dice loss over classes: softmax probabilities `p`, one-hot targets `g`, both zero on
//! ignored pixels; per class `(2 sum(p g) + s) / (sum p + sum g + s)` summed over the batch and
//! the pixels, loss `1 - mean over classes`. `s` (smooth) is 1 by default.

use super::Targets;
use burn::prelude::*;
use burn::tensor::activation::softmax;

pub fn dice_loss(logits: Tensor<4>, t: &Targets, smooth: f32) -> Tensor<1> {
    let onehot = t
        .onehot
        .clone()
        .expect("Dice loss needs one-hot targets (Targets built without them)");
    let p = softmax(logits, 1) * t.valid.clone();
    let [_, c, _, _] = p.dims();
    let inter = (p.clone() * onehot.clone()).sum_dims_squeeze::<1, _>(&[0, 2, 3]);
    let den = p.sum_dims_squeeze::<1, _>(&[0, 2, 3]) + onehot.sum_dims_squeeze::<1, _>(&[0, 2, 3]);
    let dice = (inter * 2.0 + smooth) / (den + smooth);
    dice.sum().neg() / c as f32 + 1.0
}
