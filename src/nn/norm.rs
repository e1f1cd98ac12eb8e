//! `nn.LayerNorm` over the last dimension of token rows and SAM's `LayerNorm2d` over the
//! channels of a `[C, H, W]` map.

use super::loader::Weights;
use crate::ops::norm::{layer_norm, layer_norm_of, layer_norm2d};

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f32) -> Self {
        Self {
            w: w.get("weight", &[dim]),
            b: w.get("bias", &[dim]),
            eps,
        }
    }

    /// Normalises each row of `x` (`[rows, dim]`) in place.
    pub fn forward(&self, x: &mut [f32]) {
        layer_norm(x, self.w.len(), &self.w, &self.b, self.eps);
    }

    /// A normalised copy of `x`, the input left as it is (a residual stream).
    pub fn forward_of(&self, x: &[f32]) -> Vec<f32> {
        layer_norm_of(x, self.w.len(), &self.w, &self.b, self.eps)
    }
}

#[derive(Clone, Debug)]
pub struct LayerNorm2d {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm2d {
    pub fn load(w: &Weights, channels: usize, eps: f32) -> Self {
        Self {
            w: w.get("weight", &[channels]),
            b: w.get("bias", &[channels]),
            eps,
        }
    }

    /// Normalises each position of `x` (`[C, hw]`) over the channels, in place.
    pub fn forward(&self, x: &mut [f32], hw: usize) {
        layer_norm2d(x, &self.w, &self.b, hw, self.eps);
    }
}
