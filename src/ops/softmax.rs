//! Softmax over rows, with the vectorisable `exp` of [`super::activation::exp_nonpositive`].

use super::activation::exp_nonpositive;
use super::simd::{max, sum, vectorized};
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
    if dim < 16 {
        return softmax_short_rows(x, dim);
    }
    vectorized(
        #[inline(always)]
        || {
            for row in x.chunks_mut(dim) {
                let inv = 1.0 / exp_shifted(row);
                row.iter_mut().for_each(|v| *v *= inv);
            }
        },
    )
}

/// Rows shorter than one vector (SAM's decoder: a few prompt tokens per head): each row
/// shifted by its maximum, then one `exp` pass over all the rows, vectorised across them, then
/// each row divided by its sum. The same floats as the row-by-row loop.
fn softmax_short_rows(x: &mut [f32], dim: usize) {
    vectorized(
        #[inline(always)]
        || {
            for row in x.chunks_mut(dim) {
                let m = max(row);
                row.iter_mut().for_each(|v| *v -= m);
            }
            x.iter_mut().for_each(|v| *v = exp_nonpositive(*v));
            for row in x.chunks_mut(dim) {
                let total = row.iter().fold(0.0f32, |s, v| s + v);
                let inv = 1.0 / total;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        },
    )
}

/// `exp(x - max(x))` in place, returning the sum: a softmax without its division, for callers
/// that divide something smaller afterwards (attention divides each output row instead of
/// each row of scores). Inline it into a [`vectorized`] loop.
#[inline(always)]
pub fn exp_shifted(row: &mut [f32]) -> f32 {
    let m = max(row);
    // exp and the partial sums in one pass, 16 lanes at a time
    let mut acc = [0.0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for k in 0..16 {
            c[k] = exp_nonpositive(c[k] - m);
            acc[k] += c[k];
        }
    }
    let mut rest = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - m);
        rest += *v;
    }
    sum(&acc) + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_rows_give_the_row_by_row_floats() {
        for dim in [1, 3, 7, 15] {
            let x: Vec<f32> = (0..dim * 37)
                .map(|i| ((i * 7919 % 1000) as f32 / 40.0) - 12.0)
                .collect();
            let mut got = x.clone();
            softmax_rows_seq(&mut got, dim);
            let mut want = x.clone();
            for row in want.chunks_mut(dim) {
                let inv = 1.0 / vectorized(|| exp_shifted(row));
                row.iter_mut().for_each(|v| *v *= inv);
            }
            assert_eq!(got, want, "rows of {dim}");
            for row in got.chunks(dim) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "rows of {dim} sum to {s}");
            }
        }
    }
}
