//! Softmax over rows, with the vectorisable `exp` of [`super::activation::exp_nonpositive`].

use super::activation::exp_nonpositive;
use rayon::prelude::*;

/// Softmax over each row of `rows x dim` values (rows in parallel when many and the caller is
/// not already on one of rayon's workers).
pub fn softmax_rows(x: &mut [f32], dim: usize) {
    if x.len() >= 1 << 20 && rayon::current_thread_index().is_none() {
        x.par_chunks_mut(dim * 16)
            .for_each(|c| softmax_rows_seq(c, dim));
    } else {
        softmax_rows_seq(x, dim);
    }
}

/// [`softmax_rows`] on the current thread.
pub fn softmax_rows_seq(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = exp_nonpositive(*v - m));
        let mut acc = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        let rest: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for k in 0..8 {
                acc[k] += c[k];
            }
        }
        let inv = 1.0 / (acc.iter().sum::<f32>() + rest);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}
