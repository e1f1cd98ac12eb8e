//! `nn.Linear`: `y = x W^T + b`, W `[out, in]`, in f32 or (built with
//! [`Precision::Bf16`]) in bf16 with f32 sums.

use super::loader::Weights;
use crate::ops::bf16::{self, Panels};
use crate::ops::layout::{add_assign, dot, transpose};
use crate::ops::matmul::{linear_act, linear_add};
use crate::ops::simd::vectorized;
use crate::ops::{Activation, Precision};
use std::borrow::Cow;

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]` in an f32 layer; empty in a bf16 layer (see [`weight`](Self::weight)).
    w: Vec<f32>,
    pub b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
    /// The weights packed for bf16 products, in a bf16 layer (which keeps no f32 copy).
    bf16: Option<Panels>,
}

impl Linear {
    /// An f32 layer from `w [out, inp]` and `b [out]`.
    pub fn new(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize) -> Self {
        assert!(w.len() == out * inp && b.len() == out, "linear layer sizes");
        Self {
            w,
            b,
            inp,
            out,
            bf16: None,
        }
    }

    /// `weight [out, in]` and `bias [out]`, in the loader's precision.
    pub fn load(w: &Weights, inp: usize, out: usize) -> Self {
        Self::new(
            w.get("weight", &[out, inp]),
            w.get("bias", &[out]),
            inp,
            out,
        )
        .with_precision(w.precision())
    }

    /// A layer built with `bias=False`.
    pub fn load_no_bias(w: &Weights, inp: usize, out: usize) -> Self {
        Self::new(w.get("weight", &[out, inp]), vec![0.0; out], inp, out)
            .with_precision(w.precision())
    }

    /// The layer computing in `precision`: for bf16, the weights rounded and packed once (half
    /// the bytes of f32). f32 leaves the layer as it is.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        if precision == Precision::Bf16 && self.bf16.is_none() {
            self.bf16 = Some(Panels::from_rows(&self.w, self.out, self.inp));
            self.w = Vec::new();
        }
        self
    }

    /// The weight `[out, in]` (a bf16 layer's rounded values, unpacked for the call).
    pub fn weight(&self) -> Cow<'_, [f32]> {
        match &self.bf16 {
            Some(p) => Cow::Owned(p.to_rows()),
            None => Cow::Borrowed(&self.w),
        }
    }

    /// What the layer computes in.
    pub fn precision(&self) -> Precision {
        if self.bf16.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// `x` holds `rows` vectors of `inp` values; returns `rows` vectors of `out`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_act(x, rows, Activation::None)
    }

    /// `act(self(x))`, the activation applied as each tile of the product is written.
    pub fn forward_act(&self, x: &[f32], rows: usize, act: Activation) -> Vec<f32> {
        if let Some(p) = &self.bf16 {
            return bf16::linear_act(x, rows, p, &self.b, act);
        }
        if rows <= FEW_ROWS {
            let mut y = self.forward_few(x, rows);
            act.apply(&mut y);
            return y;
        }
        linear_act(x, rows, self.inp, &self.w, self.out, &self.b, act)
    }

    /// `out += self(x)` (a residual branch), each tile of the product added where it is
    /// finished; `out` holds `rows` vectors of `out` values.
    pub fn forward_add(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        if let Some(p) = &self.bf16 {
            return bf16::linear_add(x, rows, p, &self.b, out);
        }
        if rows <= FEW_ROWS {
            add_assign(out, &self.forward_few(x, rows));
            return;
        }
        linear_add(x, rows, self.inp, &self.w, self.out, &self.b, out)
    }

    /// A handful of rows (prompt tokens, a pooled vector): dot products against each weight
    /// row, the weights read once and never packed (packing them for a matrix product costs
    /// more than the product itself here). f32 layers only.
    fn forward_few(&self, x: &[f32], rows: usize) -> Vec<f32> {
        use rayon::prelude::*;
        assert!(x.len() >= rows * self.inp, "linear input size");
        let (inp, out) = (self.inp, self.out);
        if rows == 0 {
            return Vec::new();
        }
        // `[out, rows]`: 64 outputs (weight rows) per task, each against every input row
        const OUTPUTS: usize = 64;
        let mut yt = vec![0.0f32; out * rows];
        let task = |(t, ys): (usize, &mut [f32])| {
            vectorized(
                #[inline(always)]
                || {
                    for (j, col) in ys.chunks_mut(rows).enumerate() {
                        let o = t * OUTPUTS + j;
                        let wr = &self.w[o * inp..(o + 1) * inp];
                        for (i, y) in col.iter_mut().enumerate() {
                            *y = dot(&x[i * inp..(i + 1) * inp], wr) + self.b[o];
                        }
                    }
                },
            )
        };
        if inp * out >= 1 << 18 && rayon::current_thread_index().is_none() {
            yt.par_chunks_mut(OUTPUTS * rows).enumerate().for_each(task);
        } else {
            yt.chunks_mut(OUTPUTS * rows).enumerate().for_each(task);
        }
        transpose(&yt, out, rows)
    }
}

/// Up to this many rows, [`Linear::forward`] takes dot products instead of a matrix product.
const FEW_ROWS: usize = 8;
