//! 2-D convolution on `[Cin, H, W]` buffers, the algorithm chosen by shape:
//! - 3x3, stride 1, padding 1, dense: Winograd F(2x2, 3x3) (Lavin & Gray 2016), 2.25x fewer
//!   multiplications than the direct method;
//! - 1x1, stride 1: one matrix product per tile of positions;
//! - other dense kernels: tiled im2col, each tile's product written straight into the output;
//! - depthwise (`groups == Cin == Cout`): direct, channel-parallel.
//!
//! The bias and the activation are applied to each tile while it is still in cache.

use super::activation::Activation;
use super::bf16::{self, ConvRows, Panels, Precision, Rows, product, round_all, store};
use super::matmul::{SendPtr, gemm_rows};
use super::simd::vectorized;
use rayon::prelude::*;

/// A convolution's prepared weights and geometry (weights `[cout, cin / groups, k, k]`).
#[derive(Clone, Debug)]
pub struct ConvKernel {
    /// `[cout, cin / groups * k * k]`, row-major.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    /// 3x3 kernels in the Winograd domain: 16 matrices `[cout, cin]` (F(2x2, 3x3)), or 36
    /// (F(4x4, 3x3)) for wide layers.
    wino: Option<Winograd>,
    /// A dense kernel computing in bf16: `w` as bf16 rows, for [`product`].
    bf16: Option<Rows>,
    /// A Winograd kernel computing in bf16: each of `wino`'s matrices as bf16 rows.
    wino_bf16: Vec<Rows>,
    /// A stride-1 kernel computing in bf16 without unfolding ([`bf16::conv`]).
    direct_bf16: Option<ConvRows>,
}

/// Which Winograd algorithm a 3x3 convolution uses, with its transformed weights.
#[derive(Clone, Debug)]
enum Winograd {
    F2(Vec<f32>),
    F4(Vec<f32>),
}

/// Kernels with fewer multiply-adds per output (`cin * k * k`) stay in f32 under bf16: the
/// first layer on a raw image, bound by memory rather than arithmetic, where rounding the
/// pixels to bf16 would cost accuracy and save no time.
const BF16_MIN_REDUCTION: usize = 32;

/// From this many input channels on, F(4x4, 3x3) (4x fewer multiplications, larger
/// transforms) beats F(2x2, 3x3) (2.25x); narrower layers are dominated by the transforms.
const F4_MIN_CHANNELS: usize = 32;

/// Below this many input channels (an image's 3) a 3x3 kernel is unfolded rather than
/// transformed: the Winograd transforms then cost more than the products they save (3.3 ms
/// against 1.0 ms for 3 -> 64 channels on 256x256).
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// In bf16, from this many input channels on, 3x3 kernels keep Winograd F(2x2, 3x3) (its
/// products in bf16); narrower ones run the direct bf16 kernel, whose products on 2 threads
/// of a Zen 5 run at 570-830 GFLOP/s, faster there than F(2x2)'s transforms allow.
const BF16_WINOGRAD_MIN_CHANNELS: usize = 256;

impl ConvKernel {
    /// `bias` defaults to zeros. Panics on inconsistent sizes (callers check shapes when they
    /// load weights) and on grouped convolutions other than depthwise.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Self {
        Self::build(w, bias, cin, cout, k, stride, pad, groups, true)
    }

    /// As [`new`](Self::new) without the Winograd transform: for kernels used once on small
    /// maps (training steps), where transforming the weights costs more than it saves.
    #[allow(clippy::too_many_arguments)]
    pub fn new_im2col(
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Self {
        Self::build(w, bias, cin, cout, k, stride, pad, groups, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        winograd: bool,
    ) -> Self {
        assert_eq!(
            w.len(),
            cout * cin / groups * k * k,
            "convolution weight size"
        );
        assert!(
            groups == 1 || (groups == cin && cin == cout),
            "only dense and depthwise convolutions"
        );
        let b = bias.unwrap_or_else(|| vec![0.0; cout]);
        assert_eq!(b.len(), cout, "convolution bias size");
        let wino = (winograd
            && k == 3
            && stride == 1
            && pad == 1
            && groups == 1
            && cin >= WINOGRAD_MIN_CHANNELS)
            .then(|| {
                if cin >= F4_MIN_CHANNELS {
                    Winograd::F4(winograd4_weights(&w, cout, cin))
                } else {
                    Winograd::F2(winograd_weights(&w, cout, cin))
                }
            });
        Self {
            w,
            b,
            cin,
            cout,
            k,
            stride,
            pad,
            groups,
            wino,
            bf16: None,
            wino_bf16: Vec::new(),
            direct_bf16: None,
        }
    }

    /// The kernel computing in `precision`. For bf16 (dense kernels; depthwise ones stay in
    /// f32) the weights are converted once: 3x3 kernels from [`BF16_WINOGRAD_MIN_CHANNELS`]
    /// input channels on take Winograd F(2x2, 3x3) with the products in the transform domain
    /// in bf16 (the transformed weights, made from the f32 ones, rounded once); other stride-1
    /// kernels run the direct bf16 kernel ([`bf16::conv`]); the rest multiply unfolded tiles in
    /// bf16. F(4x4, 3x3)'s larger transforms amplify bf16's rounding tenfold (relative L2 2e-2
    /// against 2e-3 to 3e-3 for F(2x2, 3x3) and the direct method, on the parity fixtures),
    /// so it is not used in bf16. f32 leaves the kernel as it is.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        if precision == Precision::Bf16
            && self.groups == 1
            && self.bf16.is_none()
            && self.direct_bf16.is_none()
            && self.cin * self.k * self.k >= BF16_MIN_REDUCTION
        {
            let (cin, cout) = (self.cin, self.cout);
            if self.stride == 1
                && self.k > 1
                && (self.wino.is_none() || cin < BF16_WINOGRAD_MIN_CHANNELS)
            {
                round_all(&mut self.w);
                self.wino = None;
                self.direct_bf16 = Some(ConvRows::new(&self.w, cout, cin, self.k));
                return self;
            }
            if let Some(Winograd::F4(_)) = &self.wino {
                self.wino = Some(Winograd::F2(winograd_weights(&self.w, cout, cin)));
            }
            if let Some(Winograd::F2(u) | Winograd::F4(u)) = &mut self.wino
                && cout > 0
            {
                self.wino_bf16 = u
                    .chunks_exact(cout * cin)
                    .map(|m| Rows::new(m, cout, cin))
                    .collect();
                *u = Vec::new(); // the bf16 products need no f32 copy
            }
            round_all(&mut self.w);
            self.bf16 = Some(Rows::new(&self.w, cout, cin * self.k * self.k));
        }
        self
    }

    /// Output size for an `h x w` input.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    /// `[Cin, H, W]` -> `([Cout, Ho, Wo], Ho, Wo)`, bias and `act` applied.
    pub fn forward(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        act: Activation,
    ) -> (Vec<f32>, usize, usize) {
        assert!(
            h + 2 * self.pad >= self.k && w + 2 * self.pad >= self.k,
            "input {h}x{w} smaller than the kernel"
        );
        let (ho, wo) = self.out_size(h, w);
        let mut out = vec![0.0f32; self.cout * ho * wo];
        self.forward_into(x, h, w, act, &mut out);
        (out, ho, wo)
    }

    /// [`forward`](Self::forward) into `out` (`[Cout, Ho, Wo]`, zeroed), e.g. one image's part
    /// of a batch.
    pub fn forward_into(&self, x: &[f32], h: usize, w: usize, act: Activation, out: &mut [f32]) {
        assert_eq!(x.len(), self.cin * h * w, "convolution input size");
        assert!(
            h + 2 * self.pad >= self.k && w + 2 * self.pad >= self.k,
            "input {h}x{w} smaller than the kernel"
        );
        let (ho, wo) = self.out_size(h, w);
        assert_eq!(out.len(), self.cout * ho * wo, "convolution output size");
        // Applied tile by tile while in cache: any activation by the 1x1 and unfolded
        // paths, ReLU only by the Winograd ones (the rest after them, in one pass).
        let transformed = match &self.wino {
            Some(Winograd::F4(_)) => true,
            Some(Winograd::F2(_)) => h.is_multiple_of(2) && w.is_multiple_of(2),
            None => false,
        };
        let fused = match act {
            _ if self.groups > 1 => act,
            Activation::None | Activation::Relu => act,
            _ if !transformed => act,
            _ => Activation::None,
        };
        if self.groups > 1 {
            self.depthwise(x, h, w, out, act);
        } else if let Some(d) = &self.direct_bf16 {
            return bf16::conv(d, &self.b, x, h, w, self.pad, act, out);
        } else if let Some(wb) = &self.bf16
            && !(self.wino.is_some() && h.is_multiple_of(2) && w.is_multiple_of(2))
        {
            // bf16 without Winograd, or F(2x2, 3x3) (the only one bf16 keeps) on odd sizes
            return self.dense_bf16(wb, x, h, w, out, act);
        } else if self.k == 1 && self.stride == 1 && self.pad == 0 {
            self.pointwise(x, h * w, out, fused);
        } else if let Some(Winograd::F4(u)) = &self.wino {
            winograd4(self, u, x, h, w, fused == Activation::Relu, out);
        } else if let Some(Winograd::F2(u)) = self
            .wino
            .as_ref()
            .filter(|_| h.is_multiple_of(2) && w.is_multiple_of(2))
        {
            winograd(self, u, x, h, w, fused == Activation::Relu, out);
        } else {
            self.im2col(x, h, w, out, fused);
        }
        if fused != act {
            act.apply(out);
        }
    }

    /// 1x1: tiles of positions, one product each, the tile's output (`cout` x the tile's
    /// positions) about [`TILE_OUTPUTS`] values, so that the bias and the activation find it
    /// in cache, but 256 to 4096 positions, and fewer when that gives each thread a tile.
    fn pointwise(&self, x: &[f32], hw: usize, out: &mut [f32], act: Activation) {
        let threads = rayon::current_num_threads().max(1);
        let per = (TILE_OUTPUTS / self.cout.max(1))
            .clamp(256, 4096)
            .min(hw.div_ceil(threads).max(256))
            .max(1);
        let tiles = hw.div_ceil(per);
        let par_inner = tiles < threads && rayon::current_thread_index().is_none();
        let ptr = SendPtr(out.as_mut_ptr());
        (0..tiles).into_par_iter().for_each(|t| {
            let p0 = t * per;
            let n = per.min(hw - p0);
            // SAFETY: tile t writes columns p0..p0 + n of every output row, disjoint from the
            // other tiles; `x[p0..]` covers `cin` rows of stride hw.
            unsafe {
                gemm_rows(
                    self.cout,
                    n,
                    self.cin,
                    &self.w,
                    self.cin,
                    &x[p0..],
                    hw,
                    ptr.get().add(p0),
                    hw,
                    par_inner,
                );
            }
            finish(ptr, &self.b, hw, p0, n, act);
        });
    }

    /// Dense k x k with any stride and padding: tiles of output rows, each unfolded (im2col)
    /// into a cache-sized buffer and multiplied straight into the output.
    fn im2col(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], act: Activation) {
        let (k, s, pad) = (self.k, self.stride, self.pad);
        let (ho, wo) = self.out_size(h, w);
        let hw_out = ho * wo;
        let kdim = self.cin * k * k;
        // Rows per tile: about 2048 output pixels, so the im2col tile stays in cache.
        let tile_rows = (2048 / wo).clamp(1, ho);
        let tiles = ho.div_ceil(tile_rows);
        let par_inner =
            tiles < rayon::current_num_threads() && rayon::current_thread_index().is_none();
        let ptr = SendPtr(out.as_mut_ptr());
        (0..tiles)
            .into_par_iter()
            .for_each_init(Vec::new, |col: &mut Vec<f32>, t| {
                let y0 = t * tile_rows;
                let rows = tile_rows.min(ho - y0);
                let n = rows * wo;
                unfold_rows(x, self.cin, h, w, k, s, pad, wo, y0, rows, col);
                let p0 = y0 * wo;
                // SAFETY: tile t writes output rows y0..y0 + rows of every channel, disjoint
                // from the other tiles.
                unsafe {
                    gemm_rows(
                        self.cout,
                        n,
                        kdim,
                        &self.w,
                        kdim,
                        col,
                        n,
                        ptr.get().add(p0),
                        hw_out,
                        par_inner,
                    );
                }
                finish(ptr, &self.b, hw_out, p0, n, act);
            });
    }

    /// Dense k x k in bf16: tiles of output rows, each unfolded (a 1x1 kernel reads its input
    /// in place), packed into bf16 panels and multiplied by the bf16 weights, the bias and
    /// `act` applied as each tile of the product is written.
    #[allow(clippy::too_many_arguments)]
    fn dense_bf16(
        &self,
        wb: &Rows,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        act: Activation,
    ) {
        let (k, s, pad) = (self.k, self.stride, self.pad);
        let (ho, wo) = self.out_size(h, w);
        let hw_out = ho * wo;
        let kdim = self.cin * k * k;
        let in_place = k == 1 && s == 1 && pad == 0;
        let tile_rows = (2048 / wo).clamp(1, ho);
        let tiles = ho.div_ceil(tile_rows);
        let par_inner =
            tiles < rayon::current_num_threads() && rayon::current_thread_index().is_none();
        let ptr = SendPtr(out.as_mut_ptr());
        (0..tiles).into_par_iter().for_each_init(
            || (Vec::new(), Panels::default()),
            |(col, panels): &mut (Vec<f32>, Panels), t| {
                let y0 = t * tile_rows;
                let rows = tile_rows.min(ho - y0);
                let (n, p0) = (rows * wo, y0 * wo);
                if in_place {
                    panels.fill_from_columns(&x[p0..], kdim, n, h * w);
                } else {
                    unfold_rows(x, self.cin, h, w, k, s, pad, wo, y0, rows, col);
                    panels.fill_from_columns(col, kdim, n, n);
                }
                product(wb, panels, par_inner, |at, tile| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (i, acc) in tile.iter().enumerate().take(at.rows) {
                                let co = at.i0 + i;
                                let b = self.b[co];
                                // SAFETY: channel `co`, positions p0 + c0 .. + cols of this tile of
                                // output rows: written by this tile of the product only.
                                let row = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        ptr.get().add(co * hw_out + p0 + at.c0),
                                        at.cols,
                                    )
                                };
                                act.write_row(row, acc, b);
                            }
                        },
                    )
                });
            },
        );
    }

    /// Depthwise `k x k` convolution (stride 1, `same` padding) on rows `[h * w, c]`, channels
    /// last (vision transformers' token layout, so no transposes around it), bias and `act`
    /// applied; output rows in parallel. Each value sums its taps in the order of
    /// [`forward`](Self::forward), so both layouts give the same floats.
    pub fn depthwise_rows(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        let (c, k, pad) = (self.cout, self.k, self.pad);
        assert!(
            self.groups == c && self.cin == c && self.stride == 1 && 2 * pad + 1 == k,
            "depthwise_rows: a depthwise, stride-1, same-padded kernel"
        );
        assert_eq!(x.len(), h * w * c, "convolution input size");
        // taps `[k * k, c]`, so that each tap is one vector over the channels
        let taps: Vec<f32> = (0..k * k)
            .flat_map(|t| (0..c).map(move |ch| self.w[ch * k * k + t]))
            .collect();
        let mut out = vec![0.0f32; h * w * c];
        out.par_chunks_mut((w * c).max(1))
            .enumerate()
            .for_each(|(y, orow)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (xo, o) in orow.chunks_exact_mut(c).enumerate() {
                            o.copy_from_slice(&self.b);
                            for ky in 0..k {
                                let Some(sy) = (y + ky).checked_sub(pad).filter(|&s| s < h) else {
                                    continue;
                                };
                                for kx in 0..k {
                                    let Some(sx) = (xo + kx).checked_sub(pad).filter(|&s| s < w)
                                    else {
                                        continue;
                                    };
                                    let src = &x[(sy * w + sx) * c..][..c];
                                    let tap = &taps[(ky * k + kx) * c..][..c];
                                    for ((ov, &xv), &wv) in o.iter_mut().zip(src).zip(tap) {
                                        *ov += wv * xv;
                                    }
                                }
                            }
                        }
                    },
                );
                act.apply(orow);
            });
        out
    }

    /// Depthwise: one channel per task, its plane started from the bias, the taps accumulated
    /// row by row and `act` applied while the plane is in cache.
    fn depthwise(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], act: Activation) {
        let (k, stride, pad) = (self.k, self.stride, self.pad);
        let (ho, wo) = self.out_size(h, w);
        let n = ho * wo;
        out.par_chunks_mut(n).enumerate().for_each(|(c, o)| {
            let src = &x[c * h * w..(c + 1) * h * w];
            let kw = &self.w[c * k * k..(c + 1) * k * k];
            vectorized(
                #[inline(always)]
                || {
                    // Written before it is read: fresh (calloc'd) pages read first map the shared
                    // zero page, and the first write then pays a copy-on-write fault with a TLB
                    // shootdown to the other threads.
                    o.fill(self.b[c]);
                    for oy in 0..ho {
                        let orow = &mut o[oy * wo..(oy + 1) * wo];
                        for ky in 0..k {
                            let sy = (oy * stride + ky) as isize - pad as isize;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            let line = &src[sy as usize * w..(sy as usize + 1) * w];
                            for kx in 0..k {
                                let kv = kw[ky * k + kx];
                                let lo = pad.saturating_sub(kx).div_ceil(stride);
                                let hi = (w + pad).saturating_sub(kx).div_ceil(stride).min(wo);
                                if lo >= hi {
                                    continue;
                                }
                                let first = lo * stride + kx - pad;
                                if stride == 1 {
                                    orow[lo..hi]
                                        .iter_mut()
                                        .zip(&line[first..first + (hi - lo)])
                                        .for_each(|(ov, &xv)| *ov += kv * xv);
                                } else {
                                    for (i, ov) in orow[lo..hi].iter_mut().enumerate() {
                                        *ov += kv * line[first + i * stride];
                                    }
                                }
                            }
                        }
                    }
                },
            );
            act.apply(o);
        });
    }
}

/// im2col for output rows `y0..y0 + rows` of a `k x k` convolution (stride `s`, padding `pad`)
/// over the `[cin, h, w]` map `x`: `col` becomes `[cin * k * k, rows * wo]`, row
/// `(ci * k + ky) * k + kx` holding the input value under tap `(ky, kx)` of every output
/// position (zero where the tap falls on the padding).
#[allow(clippy::too_many_arguments)]
fn unfold_rows(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    pad: usize,
    wo: usize,
    y0: usize,
    rows: usize,
    col: &mut Vec<f32>,
) {
    let kk = k * k;
    let n = rows * wo;
    col.clear();
    col.resize(cin * kk * n, 0.0);
    for ci in 0..cin {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let r = (ci * kk + ky * k + kx) * n;
                // output columns whose input column `ox * s + kx - pad` is inside
                let lo = pad.saturating_sub(kx).div_ceil(s).min(wo);
                let hi = (w + pad).saturating_sub(kx).div_ceil(s).clamp(lo, wo);
                for yy in 0..rows {
                    let sy = ((y0 + yy) * s + ky) as isize - pad as isize;
                    let drow = &mut col[r + yy * wo..r + (yy + 1) * wo];
                    if sy < 0 || sy >= h as isize || lo == hi {
                        drow.fill(0.0);
                        continue;
                    }
                    let srow = &plane[sy as usize * w..(sy as usize + 1) * w];
                    drow[..lo].fill(0.0);
                    drow[hi..].fill(0.0);
                    let first = lo * s + kx - pad;
                    if s == 1 {
                        drow[lo..hi].copy_from_slice(&srow[first..first + hi - lo]);
                    } else {
                        for (i, d) in drow[lo..hi].iter_mut().enumerate() {
                            *d = srow[first + i * s];
                        }
                    }
                }
            }
        }
    }
}

/// Output values per tile of a 1x1 convolution's product (256 KiB of f32).
const TILE_OUTPUTS: usize = 1 << 16;

/// Adds the bias and applies `act` to the columns `p0..p0+n` of every output channel.
fn finish(out: SendPtr, bias: &[f32], hw: usize, p0: usize, n: usize, act: Activation) {
    vectorized(
        #[inline(always)]
        || {
            for (co, &b) in bias.iter().enumerate() {
                // SAFETY: each tile owns columns p0..p0+n of every channel; tiles do not
                // overlap.
                let row = unsafe { std::slice::from_raw_parts_mut(out.0.add(co * hw + p0), n) };
                match act {
                    Activation::None => row.iter_mut().for_each(|v| *v += b),
                    Activation::Relu => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
                    _ => row.iter_mut().for_each(|v| *v = act.of(*v + b)),
                }
            }
        },
    )
}

/// `U = G g G^T` for every 3x3 kernel, laid out as 16 matrices `[cout, cin]`.
fn winograd_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * cout * cin];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &w[(co * cin + ci) * 9..(co * cin + ci) * 9 + 9];
            // G g: 4x3
            let mut gg = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = g0;
                gg[1][j] = 0.5 * (g0 + g1 + g2);
                gg[2][j] = 0.5 * (g0 - g1 + g2);
                gg[3][j] = g2;
            }
            for (i, r) in gg.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (j, v) in row.iter().enumerate() {
                    u[((i * 4 + j) * cout + co) * cin + ci] = *v;
                }
            }
        }
    }
    u
}

/// 3x3 convolution (padding 1) by Winograd F(2x2, 3x3): input tiles to the transform domain,
/// 16 matrix products over the channels, 2x2 output tiles back; 2.25x fewer multiplications
/// than the direct method. Blocks of tile rows run in parallel.
fn winograd(c: &ConvKernel, u: &[f32], x: &[f32], h: usize, w: usize, relu: bool, out: &mut [f32]) {
    let (th, tw) = (h / 2, w / 2);
    let hw = h * w;
    let (cin, cout) = (c.cin, c.cout);
    // Tiles per block: the transformed input block (16 x cin x tiles) stays around 2 MB.
    let target = (32768 / cin.max(1)).clamp(64, 512);
    let block_rows = (target / tw).clamp(1, th);
    let blocks = th.div_ceil(block_rows);
    // Deep levels have few blocks: then the products themselves are spread over the threads.
    let par_inner =
        blocks < rayon::current_num_threads() && rayon::current_thread_index().is_none();
    let ptr = SendPtr(out.as_mut_ptr());
    (0..blocks).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, m): &mut (Vec<f32>, Vec<f32>), bi| {
            let ty0 = bi * block_rows;
            let rows = block_rows.min(th - ty0);
            let nt = rows * tw;
            v.clear();
            v.resize(16 * cin * nt, 0.0);
            m.clear();
            m.resize(16 * cout * nt, 0.0);
            // Input transform, vectorised across the tiles of a row: rows of the zero-padded
            // input (width w + 2), B^T over the 4 rows, then B over each tile's 4 columns.
            let pw = w + 2;
            let mut prow = vec![0.0f32; 4 * pw];
            let mut trow = vec![0.0f32; 4 * pw];
            for ci in 0..cin {
                let plane = &x[ci * hw..(ci + 1) * hw];
                for r in 0..rows {
                    let ty = ty0 + r;
                    for i in 0..4 {
                        let yy = 2 * ty as isize - 1 + i as isize;
                        let dst = &mut prow[i * pw..(i + 1) * pw];
                        if yy < 0 || yy >= h as isize {
                            dst.fill(0.0);
                        } else {
                            dst[0] = 0.0;
                            dst[pw - 1] = 0.0;
                            dst[1..pw - 1]
                                .copy_from_slice(&plane[yy as usize * w..(yy as usize + 1) * w]);
                        }
                    }
                    {
                        let (p0, rest) = prow.split_at(pw);
                        let (p1, rest) = rest.split_at(pw);
                        let (p2, p3) = rest.split_at(pw);
                        let (t0, rest) = trow.split_at_mut(pw);
                        let (t1, rest) = rest.split_at_mut(pw);
                        let (t2, t3) = rest.split_at_mut(pw);
                        for c in 0..pw {
                            t0[c] = p0[c] - p2[c];
                            t1[c] = p1[c] + p2[c];
                            t2[c] = p2[c] - p1[c];
                            t3[c] = p1[c] - p3[c];
                        }
                    }
                    let base = r * tw;
                    for i in 0..4 {
                        let t = &trow[i * pw..(i + 1) * pw];
                        let row = |j: usize| ((i * 4 + j) * cin + ci) * nt + base;
                        let (o0, o1, o2, o3) = (row(0), row(1), row(2), row(3));
                        for tx in 0..tw {
                            let c = 2 * tx;
                            let (a0, a1, a2, a3) = (t[c], t[c + 1], t[c + 2], t[c + 3]);
                            v[o0 + tx] = a0 - a2;
                            v[o1 + tx] = a1 + a2;
                            v[o2 + tx] = a2 - a1;
                            v[o3 + tx] = a1 - a3;
                        }
                    }
                }
            }
            transform_products(u, &c.wino_bf16, v, m, 16, cout, cin, nt, par_inner);
            // Output transform, vectorised across the tiles of a row: A^T over the 4 rows of
            // each tile, then A over its columns, bias and ReLU, two output rows at a time.
            let mut srow = vec![0.0f32; 8 * tw];
            let mut orow = vec![0.0f32; 2 * w];
            for co in 0..cout {
                let b = c.b[co];
                for r in 0..rows {
                    let ty = ty0 + r;
                    let seg = |i: usize, j: usize| {
                        let o = ((i * 4 + j) * cout + co) * nt + r * tw;
                        &m[o..o + tw]
                    };
                    for j in 0..4 {
                        let (m0, m1, m2, m3) = (seg(0, j), seg(1, j), seg(2, j), seg(3, j));
                        let (s0, s1) = srow.split_at_mut(4 * tw);
                        let s0 = &mut s0[j * tw..(j + 1) * tw];
                        let s1 = &mut s1[j * tw..(j + 1) * tw];
                        for tx in 0..tw {
                            s0[tx] = m0[tx] + m1[tx] + m2[tx];
                            s1[tx] = m1[tx] - m2[tx] - m3[tx];
                        }
                    }
                    for a in 0..2 {
                        let sj = |j: usize| &srow[(a * 4 + j) * tw..(a * 4 + j + 1) * tw];
                        let (q0, q1, q2, q3) = (sj(0), sj(1), sj(2), sj(3));
                        let out_row = &mut orow[a * w..(a + 1) * w];
                        for tx in 0..tw {
                            let mut y0 = q0[tx] + q1[tx] + q2[tx] + b;
                            let mut y1 = q1[tx] - q2[tx] - q3[tx] + b;
                            if relu {
                                y0 = y0.max(0.0);
                                y1 = y1.max(0.0);
                            }
                            out_row[2 * tx] = y0;
                            out_row[2 * tx + 1] = y1;
                        }
                    }
                    let o = co * hw + 2 * ty * w;
                    // SAFETY: each block writes only its own tile rows (two image rows each) of
                    // every channel; blocks do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(orow.as_ptr(), ptr.get().add(o), 2 * w)
                    };
                }
            }
        },
    );
}

/// The Winograd-domain products of one block: `m[i] = u[i] @ v[i]` for each of the `count`
/// (16 or 36) points, `u[i]` `[cout, cin]`, `v[i]` `[cin, nt]`, `m[i]` `[cout, nt]`; in
/// bf16 on `u_bf16` (the `u[i]` as bf16 rows) when it is not empty.
#[allow(clippy::too_many_arguments)]
fn transform_products(
    u: &[f32],
    u_bf16: &[Rows],
    v: &[f32],
    m: &mut [f32],
    count: usize,
    cout: usize,
    cin: usize,
    nt: usize,
    par: bool,
) {
    assert!(v.len() >= count * cin * nt && m.len() >= count * cout * nt);
    if !u_bf16.is_empty() {
        assert_eq!(u_bf16.len(), count, "bf16 Winograd matrices");
        let mut panels = Panels::default();
        for (xi, ub) in u_bf16.iter().enumerate() {
            panels.fill_from_columns(&v[xi * cin * nt..], cin, nt, nt);
            let dst = SendPtr(m[xi * cout * nt..].as_mut_ptr());
            // SAFETY: `m[xi]` holds `cout` rows of `nt` values; tiles write disjoint parts.
            product(ub, &panels, par, |at, tile| unsafe {
                store(at, tile, dst.get(), nt)
            });
        }
        return;
    }
    assert!(u.len() >= count * cout * cin);
    for xi in 0..count {
        // SAFETY: the asserts above bound every matrix; the `m[xi]` are disjoint.
        unsafe {
            gemm_rows(
                cout,
                nt,
                cin,
                &u[xi * cout * cin..(xi + 1) * cout * cin],
                cin,
                &v[xi * cin * nt..(xi + 1) * cin * nt],
                nt,
                m[xi * cout * nt..].as_mut_ptr(),
                nt,
                par,
            );
        }
    }
}

/// Winograd F(4x4, 3x3)'s kernel transform `G` (6x3), Lavin & Gray 2016.
pub(crate) const G: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `U = G g G^T` for Winograd F(4x4, 3x3): 36 matrices `[cout, cin]`.
fn winograd4_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 36 * cout * cin];
    let ptr = SendPtr(u.as_mut_ptr());
    // One output channel per task, vectorised over the input channels: the taps gathered
    // into nine rows of `cin`, then `G g` (6x3) and `(G g) G^T` (6x6) row by row, in f64 for
    // the fractions and rounded once.
    (0..cout).into_par_iter().for_each_init(
        || (vec![0.0f64; 9 * cin], vec![0.0f64; 18 * cin]),
        |(taps, gg), co| {
            for ci in 0..cin {
                for (t, &v) in w[(co * cin + ci) * 9..][..9].iter().enumerate() {
                    taps[t * cin + ci] = v as f64;
                }
            }
            // gg[i][j] = sum_k G[i][k] g[k][j]
            for (i, row) in G.iter().enumerate() {
                for j in 0..3 {
                    let dst = &mut gg[(i * 3 + j) * cin..][..cin];
                    let (g0, g1, g2) = (
                        &taps[j * cin..][..cin],
                        &taps[(3 + j) * cin..][..cin],
                        &taps[(6 + j) * cin..][..cin],
                    );
                    let (r0, r1, r2) = (row[0] as f64, row[1] as f64, row[2] as f64);
                    for c in 0..cin {
                        dst[c] = r0 * g0[c] + r1 * g1[c] + r2 * g2[c];
                    }
                }
            }
            // u[i][j] = sum_k gg[i][k] G[j][k]
            for i in 0..6 {
                for (j, grow) in G.iter().enumerate() {
                    let (a0, a1, a2) = (
                        &gg[i * 3 * cin..][..cin],
                        &gg[(i * 3 + 1) * cin..][..cin],
                        &gg[(i * 3 + 2) * cin..][..cin],
                    );
                    let (q0, q1, q2) = (grow[0] as f64, grow[1] as f64, grow[2] as f64);
                    // SAFETY: task co writes row ((i * 6 + j) * cout + co) of every matrix,
                    // which no other task writes.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            ptr.get().add(((i * 6 + j) * cout + co) * cin),
                            cin,
                        )
                    };
                    for c in 0..cin {
                        dst[c] = (a0[c] * q0 + a1[c] * q1 + a2[c] * q2) as f32;
                    }
                }
            }
        },
    );
    u
}

/// `B^T d` for the six values `d` (one column or row of a 6x6 input tile).
#[inline(always)]
fn bt6(d: [f32; 6]) -> [f32; 6] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * (d[1] + d[2]) + d[3] + d[4],
        4.0 * (d[1] - d[2]) - d[3] + d[4],
        2.0 * (d[3] - d[1]) - d[2] + d[4],
        2.0 * (d[1] - d[3]) - d[2] + d[4],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `A^T m` for the six values `m` (one column or row of a 6x6 product tile).
#[inline(always)]
fn at6(m: [f32; 6]) -> [f32; 4] {
    let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
    let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m[5],
    ]
}

/// Winograd F(4x4, 3x3)'s input transform `V = B^T d B` of tile rows `ty0..ty0 + rows` of the
/// `[cin, h, w]` map `x` (6x6 tiles with stride 4 from row and column -1, zeros outside):
/// `v` becomes 36 matrices `[cin, rows * ceil(w / 4)]`, vectorised across the tiles of a row.
pub(crate) fn winograd4_input(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    ty0: usize,
    rows: usize,
    v: &mut Vec<f32>,
) {
    let tw = w.div_ceil(4);
    let hw = h * w;
    let nt = rows * tw;
    // Padded input rows: column j of a row holds input column j - 1 (zeros outside).
    let pw = 4 * tw + 2;
    v.clear();
    v.resize(36 * cin * nt, 0.0);
    let mut prow = vec![0.0f32; 6 * pw];
    let mut trow = vec![0.0f32; 6 * pw];
    for ci in 0..cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for r in 0..rows {
            let ty = ty0 + r;
            for i in 0..6 {
                let yy = 4 * ty as isize - 1 + i as isize;
                let dst = &mut prow[i * pw..(i + 1) * pw];
                if yy >= 0 && yy < h as isize {
                    dst[0] = 0.0;
                    dst[1..1 + w].copy_from_slice(&plane[yy as usize * w..(yy as usize + 1) * w]);
                    dst[1 + w..].fill(0.0);
                } else {
                    dst.fill(0.0);
                }
            }
            // B^T over the six rows, vectorised along the row.
            {
                let p: [&[f32]; 6] = std::array::from_fn(|i| &prow[i * pw..(i + 1) * pw]);
                let (t0, rest) = trow.split_at_mut(pw);
                let (t1, rest) = rest.split_at_mut(pw);
                let (t2, rest) = rest.split_at_mut(pw);
                let (t3, rest) = rest.split_at_mut(pw);
                let (t4, t5) = rest.split_at_mut(pw);
                for col in 0..pw {
                    let t = bt6([
                        p[0][col], p[1][col], p[2][col], p[3][col], p[4][col], p[5][col],
                    ]);
                    t0[col] = t[0];
                    t1[col] = t[1];
                    t2[col] = t[2];
                    t3[col] = t[3];
                    t4[col] = t[4];
                    t5[col] = t[5];
                }
            }
            // then B over each tile's six columns, six output rows at a time.
            let base = r * tw;
            for i in 0..6 {
                let t = &trow[i * pw..(i + 1) * pw];
                let o: [usize; 6] = std::array::from_fn(|j| ((i * 6 + j) * cin + ci) * nt + base);
                let mut outs: [&mut [f32]; 6] = {
                    let vp = v.as_mut_ptr();
                    // SAFETY: the six destinations are disjoint rows of `v`, each `tw` long.
                    std::array::from_fn(|j| unsafe {
                        std::slice::from_raw_parts_mut(vp.add(o[j]), tw)
                    })
                };
                for tx in 0..tw {
                    let a = &t[4 * tx..4 * tx + 6];
                    let s6 = bt6([a[0], a[1], a[2], a[3], a[4], a[5]]);
                    for (j, dst) in outs.iter_mut().enumerate() {
                        dst[tx] = s6[j];
                    }
                }
            }
        }
    }
}

/// 3x3 convolution (padding 1, any size) by Winograd F(4x4, 3x3): 6x6 input tiles to the
/// transform domain, 36 matrix products over the channels, 4x4 output tiles back (partial tiles
/// at the bottom and right edges are cut); 4x fewer multiplications than the direct method.
/// Blocks of tile rows run in parallel; transforms are vectorised across the tiles of a row.
fn winograd4(
    c: &ConvKernel,
    u: &[f32],
    x: &[f32],
    h: usize,
    w: usize,
    relu: bool,
    out: &mut [f32],
) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    let hw = h * w;
    let (cin, cout) = (c.cin, c.cout);
    // Tiles per block: the transformed input block (36 x cin x tiles) stays around 2-4 MB.
    let target = (49152 / cin.max(1)).clamp(64, 512);
    let block_rows = (target / tw).clamp(1, th);
    let blocks = th.div_ceil(block_rows);
    let par_inner =
        blocks < rayon::current_num_threads() && rayon::current_thread_index().is_none();
    let ptr = SendPtr(out.as_mut_ptr());
    (0..blocks).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, m): &mut (Vec<f32>, Vec<f32>), bi| {
            let ty0 = bi * block_rows;
            let rows = block_rows.min(th - ty0);
            let nt = rows * tw;
            winograd4_input(x, cin, h, w, ty0, rows, v);
            m.clear();
            m.resize(36 * cout * nt, 0.0);
            transform_products(u, &c.wino_bf16, v, m, 36, cout, cin, nt, par_inner);
            // Output transform: A^T over each tile's six rows (vectorised across the tiles),
            // then A over its columns, bias and ReLU.
            let mut srow = vec![0.0f32; 24 * tw];
            let mut orow = vec![0.0f32; 4 * 4 * tw];
            for co in 0..cout {
                let b = c.b[co];
                for r in 0..rows {
                    let ty = ty0 + r;
                    for j in 0..6 {
                        let seg: [&[f32]; 6] = std::array::from_fn(|i| {
                            let o = ((i * 6 + j) * cout + co) * nt + r * tw;
                            &m[o..o + tw]
                        });
                        let (s0, rest) = srow.split_at_mut(6 * tw);
                        let (s1, rest) = rest.split_at_mut(6 * tw);
                        let (s2, s3) = rest.split_at_mut(6 * tw);
                        let (d0, d1, d2, d3) = (
                            &mut s0[j * tw..(j + 1) * tw],
                            &mut s1[j * tw..(j + 1) * tw],
                            &mut s2[j * tw..(j + 1) * tw],
                            &mut s3[j * tw..(j + 1) * tw],
                        );
                        for tx in 0..tw {
                            let a = at6([
                                seg[0][tx], seg[1][tx], seg[2][tx], seg[3][tx], seg[4][tx],
                                seg[5][tx],
                            ]);
                            d0[tx] = a[0];
                            d1[tx] = a[1];
                            d2[tx] = a[2];
                            d3[tx] = a[3];
                        }
                    }
                    for k in 0..4 {
                        let sk: [&[f32]; 6] =
                            std::array::from_fn(|j| &srow[(k * 6 + j) * tw..(k * 6 + j + 1) * tw]);
                        let dst = &mut orow[k * 4 * tw..(k + 1) * 4 * tw];
                        for tx in 0..tw {
                            let y = at6([
                                sk[0][tx], sk[1][tx], sk[2][tx], sk[3][tx], sk[4][tx], sk[5][tx],
                            ]);
                            let d = &mut dst[4 * tx..4 * tx + 4];
                            for l in 0..4 {
                                let v = y[l] + b;
                                d[l] = if relu { v.max(0.0) } else { v };
                            }
                        }
                    }
                    for k in 0..4 {
                        let oy = 4 * ty + k;
                        if oy >= h {
                            break;
                        }
                        // SAFETY: each block writes only its own tile rows of every channel.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                orow[k * 4 * tw..].as_ptr(),
                                ptr.get().add(co * hw + oy * w),
                                w,
                            )
                        };
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bf16::round;

    fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    }

    /// Every algorithm applies its activation exactly once, fused into its tiles or after:
    /// GELU through `forward` equals the plain convolution with GELU applied afterwards, for
    /// 1x1 (several tiles), unfolded (strided), Winograd F(2x2) (even and odd sizes),
    /// Winograd F(4x4) (even and odd sizes), depthwise, and bf16.
    #[test]
    fn activations_apply_once_on_every_path() {
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
        for (cin, cout, k, s, groups, h, w, bf16) in [
            (8, 6, 1, 1, 1, 40, 30, false),
            (8, 6, 3, 2, 1, 9, 8, false),
            (8, 6, 3, 1, 1, 6, 10, false),
            (8, 6, 3, 1, 1, 7, 9, false),
            (40, 6, 3, 1, 1, 8, 12, false),
            (40, 6, 3, 1, 1, 7, 9, false),
            (6, 6, 3, 1, 6, 7, 9, false),
            (40, 6, 3, 1, 1, 8, 12, true),
            (40, 6, 1, 1, 1, 7, 9, true),
        ] {
            let wts: Vec<f32> = (0..cout * cin / groups * k * k)
                .map(|i| val(i) * 0.2)
                .collect();
            let b: Vec<f32> = (0..cout).map(|i| val(i + 5)).collect();
            let mut kern = ConvKernel::new(wts, Some(b), cin, cout, k, s, k / 2, groups);
            if bf16 {
                kern = kern.with_precision(Precision::Bf16);
            }
            let x: Vec<f32> = (0..cin * h * w).map(|i| val(i + 11)).collect();
            let (mut want, _, _) = kern.forward(&x, h, w, Activation::None);
            Activation::Gelu.apply(&mut want);
            let (got, _, _) = kern.forward(&x, h, w, Activation::Gelu);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                err < 1e-5,
                "{cin}->{cout} k{k} s{s} {h}x{w}: max difference {err}"
            );
        }
    }

    /// bf16 kernels against f32 on the bf16-rounded operands: unfolded tiles (a strided 3x3,
    /// a 3x3 on odd sizes) and 1x1 read in place give the same sums up to their order; 3x3 on
    /// even sizes goes through Winograd F(2x2, 3x3), whose transforms are rounded too.
    #[test]
    fn bf16_kernels_match_the_rounded_operands() {
        let (cin, cout) = (40, 37);
        for (k, s, pad, h, w) in [
            (1, 1, 0, 6, 10),
            (1, 1, 0, 48, 50), // tiles of 40 of the 48 rows, read in place with rows 2400 apart
            (3, 2, 1, 9, 8),
            (3, 1, 1, 7, 9),
            (3, 1, 1, 6, 10),
        ] {
            // uncorrelated values (smooth ones cancel in the sums, which magnifies any
            // rounding relative to the result)
            let noise = |n: usize, seed: u32| -> Vec<f32> {
                let mut s = seed;
                (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                        (s >> 8) as f32 / (1 << 23) as f32 - 1.0
                    })
                    .collect()
            };
            let x = noise(cin * h * w, 1);
            let wt: Vec<f32> = noise(cout * cin * k * k, 2)
                .iter()
                .map(|v| v * 0.1)
                .collect();
            let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.01 - 0.2).collect();
            let rounded = |v: &[f32]| v.iter().map(|&a| round(a)).collect::<Vec<f32>>();
            let reference =
                ConvKernel::new_im2col(rounded(&wt), Some(b.clone()), cin, cout, k, s, pad, 1);
            let (want, ho, wo) = reference.forward(&rounded(&x), h, w, Activation::Relu);
            let bf16 = ConvKernel::new(wt, Some(b), cin, cout, k, s, pad, 1)
                .with_precision(Precision::Bf16);
            let (got, gh, gw) = bf16.forward(&x, h, w, Activation::Relu);
            assert_eq!((gh, gw), (ho, wo));
            let winograd = k == 3 && s == 1 && h % 2 == 0 && w % 2 == 0;
            let tol = if winograd { 8e-3 } else { 1e-5 };
            let e = rel_l2(&got, &want);
            assert!(e < tol, "{k}x{k} stride {s} on {h}x{w}: relative L2 {e:e}");
        }
        // a first layer on a 3-channel image stays f32, Winograd F(2x2, 3x3) included
        let x: Vec<f32> = (0..3 * 8 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
        let wt: Vec<f32> = (0..5 * 27).map(|i| (i as f32 * 0.11).cos()).collect();
        let f32k = ConvKernel::new(wt, None, 3, 5, 3, 1, 1, 1);
        let bf16 = f32k.clone().with_precision(Precision::Bf16);
        assert_eq!(
            bf16.forward(&x, 8, 8, Activation::Relu).0,
            f32k.forward(&x, 8, 8, Activation::Relu).0
        );
    }
}
