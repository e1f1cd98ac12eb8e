//! `nn.Linear`: `y = x W^T + b`, W `[out, in]`.

use super::loader::Weights;
use crate::ops::layout::add_row_bias;
use crate::ops::matmul::matmul_nt;

#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
}

impl Linear {
    /// `weight [out, in]` and `bias [out]`.
    pub fn load(w: &Weights, inp: usize, out: usize) -> Self {
        Self {
            w: w.get("weight", &[out, inp]),
            b: w.get("bias", &[out]),
            inp,
            out,
        }
    }

    /// A layer built with `bias=False`.
    pub fn load_no_bias(w: &Weights, inp: usize, out: usize) -> Self {
        Self {
            w: w.get("weight", &[out, inp]),
            b: vec![0.0; out],
            inp,
            out,
        }
    }

    /// `x` holds `rows` vectors of `inp` values; returns `rows` vectors of `out`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = matmul_nt(x, &self.w, rows, self.inp, self.out);
        add_row_bias(&mut y, &self.b);
        y
    }
}
