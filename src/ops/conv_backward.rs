//! Gradients of the dense stride-1 convolution (`k x k`, padding `pad`, any channels) on
//! `[N, C, H, W]` batches, for training:
//! - the input gradient is itself a convolution, of the output gradient with the kernels
//!   flipped and their channel axes swapped (padding `k - 1 - pad`), so it runs on
//!   [`ConvKernel`]'s forward (Winograd for 3x3);
//! - the weight gradient sums, over every image and position, the output gradient times the
//!   unfolded input: tiles of output rows are unfolded (im2col) into a cache-sized buffer and
//!   multiplied into a per-thread accumulator, which the threads add at the end;
//! - the bias gradient sums the output gradient over images and positions.

use super::activation::Activation;
use super::conv::{ConvKernel, unfold_rows};
use super::matmul::gemm_strided_acc;
use rayon::prelude::*;

/// A dense, stride-1 convolution's shape: `cin -> cout`, `k x k` kernels, `pad` on each side,
/// on `h x w` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
}

impl ConvShape {
    /// Output size `(ho, wo)`.
    pub fn out_size(&self) -> (usize, usize) {
        (
            self.h + 2 * self.pad + 1 - self.k,
            self.w + 2 * self.pad + 1 - self.k,
        )
    }

    /// Floating-point operations of the forward pass (or of either gradient) on `n` images.
    pub fn flops(&self, n: usize) -> f64 {
        let (ho, wo) = self.out_size();
        2.0 * (n * self.cout * self.cin * self.k * self.k * ho * wo) as f64
    }

    fn check(&self) {
        assert!(
            self.pad < self.k && self.h + 2 * self.pad >= self.k && self.w + 2 * self.pad >= self.k,
            "convolution {self:?}: padding must be below the kernel size and the input not smaller than the kernel"
        );
    }
}

/// The forward convolution of a batch `[n, cin, h, w]` with weights `[cout, cin, k, k]` and
/// `bias`, through [`ConvKernel`] image by image: `[n, cout, ho, wo]`.
pub fn conv_forward(x: &[f32], n: usize, wt: &[f32], bias: &[f32], s: ConvShape) -> Vec<f32> {
    s.check();
    let kernel = ConvKernel::new(
        wt.to_vec(),
        Some(bias.to_vec()),
        s.cin,
        s.cout,
        s.k,
        1,
        s.pad,
        1,
    );
    batched(&kernel, x, n, s.h, s.w)
}

/// `dL/dx` `[n, cin, h, w]` from `dL/dy` `[n, cout, ho, wo]` and the weights.
pub fn conv_input_grad(dy: &[f32], n: usize, wt: &[f32], s: ConvShape) -> Vec<f32> {
    s.check();
    let (k, kk) = (s.k, s.k * s.k);
    // w'[ci][co][ky][kx] = w[co][ci][k-1-ky][k-1-kx]
    let mut flipped = vec![0.0f32; wt.len()];
    for co in 0..s.cout {
        for ci in 0..s.cin {
            let src = &wt[(co * s.cin + ci) * kk..][..kk];
            let dst = &mut flipped[(ci * s.cout + co) * kk..][..kk];
            for (t, d) in dst.iter_mut().enumerate() {
                *d = src[kk - 1 - t];
            }
        }
    }
    let kernel = ConvKernel::new(flipped, None, s.cout, s.cin, k, 1, k - 1 - s.pad, 1);
    let (ho, wo) = s.out_size();
    batched(&kernel, dy, n, ho, wo)
}

/// `(dL/dw [cout, cin, k, k], dL/db [cout])` from the input `[n, cin, h, w]` and `dL/dy`.
pub fn conv_weight_grad(x: &[f32], dy: &[f32], n: usize, s: ConvShape) -> (Vec<f32>, Vec<f32>) {
    s.check();
    let (ho, wo) = s.out_size();
    let (hw_in, hw_out) = (s.h * s.w, ho * wo);
    assert_eq!(x.len(), n * s.cin * hw_in, "convolution input size");
    assert_eq!(
        dy.len(),
        n * s.cout * hw_out,
        "convolution output gradient size"
    );
    let kdim = s.cin * s.k * s.k;
    let pointwise = s.k == 1 && s.pad == 0;
    // Output rows per tile: the unfolded tile (kdim x positions) near 4 MB, at least 256
    // positions so that the products stay efficient.
    let positions = ((1usize << 20) / kdim).max(256);
    let tile_rows = if pointwise {
        ho
    } else {
        (positions / wo).clamp(1, ho)
    };
    let tiles = ho.div_ceil(tile_rows);
    let items = n * tiles;
    let threads = rayon::current_num_threads().max(1);
    let per_task = items.div_ceil(threads).max(1);
    // One accumulator per task; few tasks leave the threads idle, so their products are
    // then split over the threads instead.
    let par_inner = items < threads && rayon::current_thread_index().is_none();
    let dw = (0..items)
        .into_par_iter()
        .with_min_len(per_task)
        .fold(
            || (vec![0.0f32; s.cout * kdim], Vec::new()),
            |(mut acc, mut col): (Vec<f32>, Vec<f32>), item| {
                let (img, t) = (item / tiles, item % tiles);
                let y0 = t * tile_rows;
                let rows = tile_rows.min(ho - y0);
                let np = rows * wo;
                let xi = &x[img * s.cin * hw_in..][..s.cin * hw_in];
                let g = &dy[img * s.cout * hw_out + y0 * wo..];
                // dw [cout, kdim] += g [cout, np] (row stride hw_out) @ col^T [np, kdim]
                let (b, b_rs, b_cs) = if pointwise {
                    (xi[y0 * wo..].as_ptr(), 1, hw_in as isize)
                } else {
                    unfold_rows(xi, s.cin, s.h, s.w, s.k, 1, s.pad, wo, y0, rows, &mut col);
                    (col.as_ptr(), 1, np as isize)
                };
                // SAFETY: `g` covers cout rows of stride hw_out from the tile's first position
                // (np columns each); `b` covers np x kdim elements at the given strides (the
                // unfolded tile, or the image's cin planes); `acc` is this task's own.
                unsafe {
                    gemm_strided_acc(
                        s.cout,
                        kdim,
                        np,
                        g.as_ptr(),
                        hw_out as isize,
                        1,
                        b,
                        b_rs,
                        b_cs,
                        acc.as_mut_ptr(),
                        kdim,
                        par_inner,
                    );
                }
                (acc, col)
            },
        )
        .map(|(acc, _)| acc)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0.0f32; s.cout * kdim]);
    (dw, bias_grad(dy, n, s.cout, hw_out))
}

/// `dL/db` `[c]`: `dy` `[n, c, hw]` summed over images and positions.
pub fn bias_grad(dy: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    assert_eq!(dy.len(), n * c * hw, "bias gradient input size");
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|i| plane_sum(&dy[(i * c + ch) * hw..][..hw]))
                .sum::<f64>() as f32
        })
        .collect()
}

/// The sum of a plane, eight lanes at a time, in f64 across blocks.
pub(crate) fn plane_sum(p: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for block in p.chunks(4096) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>()
            + it.remainder().iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

/// `kernel` over each image of a `[n, cin, h, w]` batch.
fn batched(kernel: &ConvKernel, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let per = kernel.cin * h * w;
    assert_eq!(x.len(), n * per, "convolution input size");
    let mut out = Vec::new();
    for i in 0..n {
        let (y, _, _) = kernel.forward(&x[i * per..(i + 1) * per], h, w, Activation::None);
        if out.is_empty() {
            out.reserve_exact(n * y.len());
        }
        out.extend_from_slice(&y);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.618 + seed as f32 * 1.7).sin() * 43758.547).fract() - 0.5)
            .collect()
    }

    /// The direct definition: y[co, oy, ox] = b + sum w[co, ci, ky, kx] x[ci, oy+ky-p, ox+kx-p].
    fn direct(x: &[f32], n: usize, wt: &[f32], b: &[f32], s: ConvShape) -> Vec<f32> {
        let (ho, wo) = s.out_size();
        let mut y = vec![0.0f32; n * s.cout * ho * wo];
        for i in 0..n {
            for co in 0..s.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = b[co] as f64;
                        for ci in 0..s.cin {
                            for ky in 0..s.k {
                                for kx in 0..s.k {
                                    let (sy, sx) = (oy + ky, ox + kx);
                                    if sy < s.pad || sx < s.pad {
                                        continue;
                                    }
                                    let (sy, sx) = (sy - s.pad, sx - s.pad);
                                    if sy >= s.h || sx >= s.w {
                                        continue;
                                    }
                                    acc += wt[((co * s.cin + ci) * s.k + ky) * s.k + kx] as f64
                                        * x[((i * s.cin + ci) * s.h + sy) * s.w + sx] as f64;
                                }
                            }
                        }
                        y[((i * s.cout + co) * ho + oy) * wo + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    /// Gradients checked against the definition: with L = sum(g * y), dL/dx, dL/dw and dL/db
    /// are linear in g, so the direct convolution's finite differences are exact up to
    /// rounding; here the adjoint identity <dx, v> = <g, conv(v)> is checked instead.
    #[test]
    fn gradients_satisfy_the_adjoint_identities() {
        for s in [
            ConvShape {
                cin: 3,
                cout: 5,
                k: 3,
                pad: 1,
                h: 7,
                w: 9,
            },
            ConvShape {
                cin: 40,
                cout: 6,
                k: 3,
                pad: 1,
                h: 6,
                w: 8,
            },
            ConvShape {
                cin: 4,
                cout: 3,
                k: 1,
                pad: 0,
                h: 5,
                w: 3,
            },
        ] {
            let n = 2;
            let (ho, wo) = s.out_size();
            let x = noise(n * s.cin * s.h * s.w, 1);
            let wt = noise(s.cout * s.cin * s.k * s.k, 2);
            let b = noise(s.cout, 3);
            let g = noise(n * s.cout * ho * wo, 4);
            let y = conv_forward(&x, n, &wt, &b, s);
            let want = direct(&x, n, &wt, &b, s);
            for (a, e) in y.iter().zip(&want) {
                assert!((a - e).abs() < 1e-4, "forward {a} vs {e} for {s:?}");
            }
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
            };
            // <dx, v> = <g, conv_nobias(v)>
            let dx = conv_input_grad(&g, n, &wt, s);
            let v = noise(x.len(), 5);
            let zero = vec![0.0; s.cout];
            let lhs = dot(&dx, &v);
            let rhs = dot(&g, &direct(&v, n, &wt, &zero, s));
            assert!(
                (lhs - rhs).abs() < 1e-3 * rhs.abs().max(1.0),
                "dx {lhs} vs {rhs}"
            );
            // <dw, u> = <g, conv_nobias with weights u (x fixed)>
            let (dw, db) = conv_weight_grad(&x, &g, n, s);
            let u = noise(wt.len(), 6);
            let lhs = dot(&dw, &u);
            let rhs = dot(&g, &direct(&x, n, &u, &zero, s));
            assert!(
                (lhs - rhs).abs() < 1e-3 * rhs.abs().max(1.0),
                "dw {lhs} vs {rhs}"
            );
            for (co, &d) in db.iter().enumerate() {
                let want: f32 = (0..n)
                    .map(|i| {
                        g[(i * s.cout + co) * ho * wo..][..ho * wo]
                            .iter()
                            .sum::<f32>()
                    })
                    .sum();
                assert!((d - want).abs() < 1e-4, "db");
            }
        }
    }
}
