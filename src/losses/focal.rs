//! Multi-class focal loss (Lin et al. 2017): `-alpha_t (1 - p_t)^gamma log p_t`, averaged over
//! the pixels that are not ignored; `alpha_t` is the per-class weight of the target class (1 when
//! no weights are given), times the pixel's weight when a weight map is given.

use super::Targets;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

pub fn focal_loss(logits: Tensor<4>, t: &Targets, gamma: f32) -> Tensor<1> {
    let logp_t = log_softmax(logits, 1).gather(1, t.index.clone());
    let p_t = logp_t.clone().exp();
    let modulating = if gamma == 0.0 {
        p_t.ones_like()
    } else {
        (p_t.neg() + 1.0).clamp_min(0.0).powf_scalar(gamma)
    };
    let mut w = t.alpha.clone().unwrap_or_else(|| t.valid.clone());
    if let Some(pw) = &t.pixel_weight {
        w = w * pw.clone();
    }
    let total = (modulating * logp_t * w).sum().neg();
    total / t.valid.clone().sum().clamp_min(1.0)
}
