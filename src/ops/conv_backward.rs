//! Gradients of the dense stride-1 convolution (`k x k`, padding `pad`, any channels) on
//! `[N, C, H, W]` batches, for training:
//! - the input gradient is itself a convolution, of the output gradient with the kernels
//!   flipped and their channel axes swapped (padding `k - 1 - pad`), so it runs on
//!   [`ConvKernel`]'s forward (Winograd for 3x3);
//! - the weight gradient sums, over every image and position, the output gradient times the
//!   input under each tap: by Winograd F(4x4, 3x3) for 3x3 kernels on large maps, otherwise
//!   one product per tap over a shifted view of a padded window of input rows (no im2col),
//!   accumulated per thread (or, for deep layers, in one accumulator split by rows);
//! - the bias gradient sums the output gradient over images and positions.

use super::activation::Activation;
use super::conv::{ConvKernel, G, winograd4_input};
use super::layout::sum_mapped;
use super::matmul::{SendPtr, gemm_strided_acc};
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

    /// Panics with the shape when padding is not below the kernel or the input is smaller
    /// than the kernel.
    pub fn check(&self) {
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
    let kernel = single_use(
        wt.to_vec(),
        Some(bias.to_vec()),
        s.cin,
        s.cout,
        s.k,
        s.pad,
        s.h * s.w,
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
    let (ho, wo) = s.out_size();
    let kernel = single_use(flipped, None, s.cout, s.cin, k, k - 1 - s.pad, ho * wo);
    batched(&kernel, dy, n, ho, wo)
}

/// `(dL/dw [cout, cin, k, k], dL/db [cout])` from the input `[n, cin, h, w]` and `dL/dy`.
///
/// No im2col: over a zero-padded window of input rows (width `wp = w + 2 pad`), the input
/// under tap `(ky, kx)` of every output position `q = y * wp + x` sits at one offset,
/// `ky * wp + kx + q`, so each tap's gradient `[cout, cin]` is one product of the output
/// gradient (padded to width `wp` with zeros, which cancel the wrap-around positions) with a
/// shifted view of the window.
pub fn conv_weight_grad(x: &[f32], dy: &[f32], n: usize, s: ConvShape) -> (Vec<f32>, Vec<f32>) {
    s.check();
    if s.k == 3
        && s.pad == 1
        && s.h * s.w >= WINOGRAD_WGRAD_MIN_POSITIONS
        && 36 * s.cout * s.cin <= WINOGRAD_WGRAD_MAX_ACC
    {
        let dw = winograd_weight_grad(x, dy, n, s);
        return (dw, bias_grad(dy, n, s.cout, s.h * s.w));
    }
    let (ho, wo) = s.out_size();
    let (hw_in, hw_out) = (s.h * s.w, ho * wo);
    assert_eq!(x.len(), n * s.cin * hw_in, "convolution input size");
    assert_eq!(
        dy.len(),
        n * s.cout * hw_out,
        "convolution output gradient size"
    );
    let (k, kk) = (s.k, s.k * s.k);
    let wp = s.w + 2 * s.pad;
    let acc_len = kk * s.cout * s.cin;
    // The gradient is accumulated in its own layout `[cout, cin, k, k]`: tap (ky, kx)'s
    // matrix has row stride cin * kk and column stride kk.
    // Output rows per window: the window (cin x rows x wp) near 512 KB so that the nine
    // shifted products read it from cache, at least 256 positions per product.
    let tile_rows = ((1usize << 17) / (s.cin * wp))
        .max(256usize.div_ceil(wp))
        .clamp(1, ho);
    let tiles = ho.div_ceil(tile_rows);
    let items = n * tiles;
    let threads = rayon::current_num_threads().max(1);
    // Small gradients: one accumulator per thread, windows in parallel. Large ones (deep
    // layers): one accumulator, windows in turn, its rows split over the threads.
    let shared = acc_len > (1 << 21) || items < threads;
    let window = |item: usize,
                  win: &mut Vec<f32>,
                  gwin: &mut Vec<f32>,
                  acc: &mut [f32],
                  split_rows: usize| {
        let (img, t) = (item / tiles, item % tiles);
        let y0 = t * tile_rows;
        let rows = tile_rows.min(ho - y0);
        let q = rows * wp;
        // input rows y0 - pad .. y0 + rows + k - 1 - pad, zero-padded, plus k floats of slack
        // per channel for the wrap-around reads of the last row
        let wrows = rows + k - 1;
        let plane = wrows * wp + k;
        win.clear();
        win.resize(s.cin * plane, 0.0);
        let xi = &x[img * s.cin * hw_in..][..s.cin * hw_in];
        for ci in 0..s.cin {
            for r in 0..wrows {
                let Some(sy) = (y0 + r).checked_sub(s.pad).filter(|&v| v < s.h) else {
                    continue;
                };
                win[ci * plane + r * wp + s.pad..][..s.w]
                    .copy_from_slice(&xi[ci * hw_in + sy * s.w..][..s.w]);
            }
        }
        gwin.clear();
        gwin.resize(s.cout * q, 0.0);
        let gi = &dy[img * s.cout * hw_out..][..s.cout * hw_out];
        for co in 0..s.cout {
            for r in 0..rows {
                gwin[co * q + r * wp..][..wo]
                    .copy_from_slice(&gi[co * hw_out + (y0 + r) * wo..][..wo]);
            }
        }
        // Output rows co0..co1 of every tap's gradient.
        let products = |co0: usize, co1: usize, dw: SendPtr| {
            for tap in 0..kk {
                let (ky, kx) = (tap / k, tap % k);
                // SAFETY: gwin is [cout, q]; the view reads win[ci * plane + ky * wp + kx + l]
                // for l < q, within the channel's plane and slack; element (co, ci) of tap's
                // gradient is dw[co * cin * kk + ci * kk + tap], rows co0..co1 written only
                // here.
                unsafe {
                    gemm_strided_acc(
                        co1 - co0,
                        s.cin,
                        q,
                        gwin.as_ptr().add(co0 * q),
                        q as isize,
                        1,
                        win.as_ptr().add(ky * wp + kx),
                        1,
                        plane as isize,
                        dw.get().add(co0 * s.cin * kk + tap),
                        s.cin * kk,
                        kk,
                        false,
                    );
                }
            }
        };
        let dw = SendPtr(acc.as_mut_ptr());
        if split_rows > 1 {
            let per = s.cout.div_ceil(split_rows);
            (0..split_rows).into_par_iter().for_each(|t| {
                let co0 = (t * per).min(s.cout);
                products(co0, (co0 + per).min(s.cout), dw)
            });
        } else {
            products(0, s.cout, dw);
        }
    };
    let dw = if shared {
        let mut acc = vec![0.0f32; acc_len];
        let (mut win, mut gwin) = (Vec::new(), Vec::new());
        for item in 0..items {
            window(item, &mut win, &mut gwin, &mut acc, threads);
        }
        acc
    } else {
        sum_over_threads(items, acc_len, |item, acc, win, gwin| {
            window(item, win, gwin, acc, 1)
        })
    };
    (dw, bias_grad(dy, n, s.cout, hw_out))
}

/// The weight gradient of a 3x3, padding-1 convolution by Winograd F(4x4, 3x3), 4x fewer
/// multiplications than the direct sums: with `V = B^T d B` the input's 6x6 tiles (as the
/// forward transforms them) and `dM = A dY A^T` the output gradient's 4x4 tiles carried back
/// through the output transform, `dU_xi = sum over tiles dM_xi V_xi^T` is 36 products
/// `[cout, tiles] x [tiles, cin]`, and `dw = G^T dU G`. Blocks of tile rows run in parallel,
/// each thread with its own 36 accumulators.
pub fn winograd_weight_grad(x: &[f32], dy: &[f32], n: usize, s: ConvShape) -> Vec<f32> {
    assert!(
        s.k == 3 && s.pad == 1,
        "Winograd weight gradient: a 3x3, padding-1 convolution"
    );
    let (h, w, cin, cout) = (s.h, s.w, s.cin, s.cout);
    let hw = h * w;
    assert_eq!(x.len(), n * cin * hw, "convolution input size");
    assert_eq!(dy.len(), n * cout * hw, "convolution output gradient size");
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    let target = (49152 / cin.max(1)).clamp(64, 512);
    let block_rows = (target / tw).clamp(1, th);
    let blocks = th.div_ceil(block_rows);
    let items = n * blocks;
    let acc_len = 36 * cout * cin;
    let du = sum_over_threads(items, acc_len, |item, acc, v, m| {
        let (img, b) = (item / blocks, item % blocks);
        let ty0 = b * block_rows;
        let rows = block_rows.min(th - ty0);
        let nt = rows * tw;
        winograd4_input(&x[img * cin * hw..][..cin * hw], cin, h, w, ty0, rows, v);
        output_grad_tiles(
            &dy[img * cout * hw..][..cout * hw],
            cout,
            h,
            w,
            ty0,
            rows,
            m,
        );
        for xi in 0..36 {
            // SAFETY: m holds 36 matrices [cout, nt], v 36 matrices [cin, nt] read
            // transposed; acc holds 36 matrices [cout, cin] of this task's own.
            unsafe {
                gemm_strided_acc(
                    cout,
                    cin,
                    nt,
                    m.as_ptr().add(xi * cout * nt),
                    nt as isize,
                    1,
                    v.as_ptr().add(xi * cin * nt),
                    1,
                    nt as isize,
                    acc.as_mut_ptr().add(xi * cout * cin),
                    cin,
                    1,
                    false,
                );
            }
        }
    });
    // dw[co, ci] = G^T dU[co, ci] G, in f64
    let mut dw = vec![0.0f32; cout * cin * 9];
    dw.par_chunks_mut(cin * 9)
        .enumerate()
        .for_each(|(co, row)| {
            for ci in 0..cin {
                let u = |i: usize, j: usize| du[((i * 6 + j) * cout + co) * cin + ci] as f64;
                // t = dU G (6x3)
                let mut t = [[0.0f64; 3]; 6];
                for (i, ti) in t.iter_mut().enumerate() {
                    for (b, tb) in ti.iter_mut().enumerate() {
                        *tb = (0..6).map(|j| u(i, j) * G[j][b] as f64).sum();
                    }
                }
                for a in 0..3 {
                    for b in 0..3 {
                        let v: f64 = (0..6).map(|i| G[i][a] as f64 * t[i][b]).sum();
                        row[ci * 9 + a * 3 + b] = v as f32;
                    }
                }
            }
        });
    dw
}

/// `dM = A dY A^T` of the output gradient's 4x4 tiles (zero beyond the map) in tile rows
/// `ty0..ty0 + rows` of the `[cout, h, w]` map `dy`: `m` becomes 36 matrices
/// `[cout, rows * ceil(w / 4)]`.
fn output_grad_tiles(
    dy: &[f32],
    cout: usize,
    h: usize,
    w: usize,
    ty0: usize,
    rows: usize,
    m: &mut Vec<f32>,
) {
    let tw = w.div_ceil(4);
    let nt = rows * tw;
    let pw = 4 * tw;
    m.clear();
    m.resize(36 * cout * nt, 0.0);
    // a tile row's four rows of dY (zero beyond the map), then A down them (six rows,
    // vectorised along the row), then A across each tile's four columns
    let mut quad = vec![0.0f32; 4 * pw];
    let mut six = vec![0.0f32; 6 * pw];
    for co in 0..cout {
        let plane = &dy[co * h * w..][..h * w];
        for r in 0..rows {
            let ty = ty0 + r;
            for l in 0..4 {
                let dst = &mut quad[l * pw..(l + 1) * pw];
                let y = 4 * ty + l;
                if y < h {
                    dst[..w].copy_from_slice(&plane[y * w..(y + 1) * w]);
                    dst[w..].fill(0.0);
                } else {
                    dst.fill(0.0);
                }
            }
            {
                let (q0, rest) = quad.split_at(pw);
                let (q1, rest) = rest.split_at(pw);
                let (q2, q3) = rest.split_at(pw);
                let (s0, rest) = six.split_at_mut(pw);
                let (s1, rest) = rest.split_at_mut(pw);
                let (s2, rest) = rest.split_at_mut(pw);
                let (s3, rest) = rest.split_at_mut(pw);
                let (s4, s5) = rest.split_at_mut(pw);
                for x in 0..pw {
                    let t = at6_adjoint([q0[x], q1[x], q2[x], q3[x]]);
                    s0[x] = t[0];
                    s1[x] = t[1];
                    s2[x] = t[2];
                    s3[x] = t[3];
                    s4[x] = t[4];
                    s5[x] = t[5];
                }
            }
            for i in 0..6 {
                let row = &six[i * pw..(i + 1) * pw];
                for tx in 0..tw {
                    let a = &row[4 * tx..4 * tx + 4];
                    let t = at6_adjoint([a[0], a[1], a[2], a[3]]);
                    for (j, &v) in t.iter().enumerate() {
                        m[((i * 6 + j) * cout + co) * nt + r * tw + tx] = v;
                    }
                }
            }
        }
    }
}

/// `A d` for the four values `d`: the adjoint of the forward's output transform `A^T m`.
#[inline(always)]
fn at6_adjoint(d: [f32; 4]) -> [f32; 6] {
    [
        d[0],
        d[0] + d[1] + d[2] + d[3],
        d[0] - d[1] + d[2] - d[3],
        d[0] + 2.0 * d[1] + 4.0 * d[2] + 8.0 * d[3],
        d[0] - 2.0 * d[1] + 4.0 * d[2] - 8.0 * d[3],
        d[3],
    ]
}

/// The sum over `items` of what `work(item, acc, scratch, scratch)` adds into a zeroed
/// `len`-float accumulator: the items split into one run per thread, each run with its own
/// accumulator and scratch buffers, the accumulators added at the end.
fn sum_over_threads(
    items: usize,
    len: usize,
    work: impl Fn(usize, &mut [f32], &mut Vec<f32>, &mut Vec<f32>) + Send + Sync,
) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    (0..items)
        .into_par_iter()
        .with_min_len(items.div_ceil(threads).max(1))
        .fold(
            || (vec![0.0f32; len], Vec::new(), Vec::new()),
            |(mut acc, mut a, mut b), item| {
                work(item, &mut acc, &mut a, &mut b);
                (acc, a, b)
            },
        )
        .map(|(acc, _, _)| acc)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0.0f32; len])
}

/// `dL/db` `[c]`: `dy` `[n, c, hw]` summed over images and positions.
pub fn bias_grad(dy: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    assert_eq!(dy.len(), n * c * hw, "bias gradient input size");
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|i| sum_mapped(&dy[(i * c + ch) * hw..][..hw], |v| v))
                .sum::<f64>() as f32
        })
        .collect()
}

/// Maps smaller than this (per image) run on im2col: a kernel used once per training step
/// would spend more on transforming its weights to the Winograd domain than the transform
/// saves on so few tiles.
const WINOGRAD_MIN_POSITIONS: usize = 32 * 32;

/// Weight gradients by Winograd on maps from this size: smaller maps have too few tiles for
/// the transforms and the per-thread accumulators to pay.
const WINOGRAD_WGRAD_MIN_POSITIONS: usize = 64 * 64;

/// The largest Winograd-domain gradient (`36 cout cin` floats) kept per thread.
const WINOGRAD_WGRAD_MAX_ACC: usize = 1 << 23;

/// Inputs with fewer channels than this run on im2col: Winograd's products over so few
/// channels are dominated by the transforms.
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// A stride-1 kernel for one training step on `hw`-position maps.
fn single_use(
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
    hw: usize,
) -> ConvKernel {
    if hw >= WINOGRAD_MIN_POSITIONS && cin >= WINOGRAD_MIN_CHANNELS {
        ConvKernel::new(w, bias, cin, cout, k, 1, pad, 1)
    } else {
        ConvKernel::new_im2col(w, bias, cin, cout, k, 1, pad, 1)
    }
}

/// `kernel` over each image of a `[n, cin, h, w]` batch, written in place.
fn batched(kernel: &ConvKernel, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let per = kernel.cin * h * w;
    assert_eq!(x.len(), n * per, "convolution input size");
    let (ho, wo) = kernel.out_size(h, w);
    let per_out = kernel.cout * ho * wo;
    let mut out = vec![0.0f32; n * per_out];
    for i in 0..n {
        let (xi, yi) = (&x[i * per..][..per], &mut out[i * per_out..][..per_out]);
        kernel.forward_into(xi, h, w, Activation::None, yi);
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
        let shape = |cin, cout, k, pad, h, w| ConvShape {
            cin,
            cout,
            k,
            pad,
            h,
            w,
        };
        // one image: a single window, its rows split over the threads; two or three: windows
        // in parallel; 13x10: Winograd's partial tiles at both edges
        for (n, s) in [
            (2, shape(3, 5, 3, 1, 7, 9)),
            (1, shape(3, 5, 3, 1, 7, 9)),
            (2, shape(40, 6, 3, 1, 6, 8)),
            (2, shape(8, 6, 3, 1, 13, 10)),
            (3, shape(4, 3, 1, 0, 5, 3)),
        ] {
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
            let rhs = dot(&g, &direct(&x, n, &u, &zero, s));
            let mut dws = vec![dw];
            if s.k == 3 {
                dws.push(winograd_weight_grad(&x, &g, n, s));
            }
            for dw in &dws {
                let lhs = dot(dw, &u);
                assert!(
                    (lhs - rhs).abs() < 1e-3 * rhs.abs().max(1.0),
                    "dw {lhs} vs {rhs} for {s:?}"
                );
            }
            if let [a, b] = &dws[..] {
                let num: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
                let den: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
                let err = (num / den).sqrt();
                assert!(
                    err < 1e-5,
                    "Winograd weight gradient for {s:?}: relative L2 {err:e}"
                );
            }
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
