//! Pixel-wise cross-entropy with class weights and an ignore index, as `torch.nn.functional.
//! cross_entropy(weight=w, ignore_index=i, reduction="mean")`: `sum(w_t * -log p_t) / sum(w_t)`
//! over the pixels that are not ignored; a per-pixel weight map (the U-Net paper's) multiplies
//! `w_t`.

use super::Targets;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

pub fn cross_entropy(logits: Tensor<4>, t: &Targets) -> Tensor<1> {
    let logp = log_softmax(logits, 1);
    let logp_t = logp.gather(1, t.index.clone());
    let mut w = t.class_weight.clone().unwrap_or_else(|| t.valid.clone());
    if let Some(pw) = &t.pixel_weight {
        w = w * pw.clone();
    }
    let num = (logp_t * w.clone()).sum().neg();
    num / w.sum().clamp_min(1e-12)
}
