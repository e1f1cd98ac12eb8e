//! Transposed convolution with kernel 2 and stride 2 (U-Net's up-convolution, SAM's upscaling,
//! Mask R-CNN's mask head): every input pixel owns its 2x2 output block, so the layer is one
//! matrix product `[cout * 4, cin] @ [cin, h * w]` and a scatter.

use super::activation::Activation;
use super::bf16::{self, Precision, Rows};
use super::conv_backward::bias_grad;
use super::matmul::{
    SendPtr, gemm_strided_acc, matmul, matmul_acc, matmul_nt, parallel_for, product, written,
};
use super::norm::layer_norm2d_block;
use super::simd::vectorized;
use rayon::prelude::*;

/// Gradients of a `ConvTranspose2d(cin, cout, 2, stride 2)` over a batch: from the input
/// `x` `[n, cin, h, w]`, the weights `w_pt` (PyTorch's `[cin, cout, 2, 2]`) and `dy`
/// `[n, cout, 2h, 2w]`, returns `(dx [n, cin, h, w], dw [cin, cout, 2, 2], db [cout])`. Each
/// image's `dy` is split into its four taps `D` `[cout * 4, h * w]`; then `dx = W D` and
/// `dw += x D^T`, both single products.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2x2_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    w_pt: &[f32],
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hw = h * w;
    assert_eq!(x.len(), n * cin * hw, "transposed convolution input size");
    assert_eq!(
        dy.len(),
        n * cout * 4 * hw,
        "transposed convolution gradient size"
    );
    assert_eq!(
        w_pt.len(),
        cin * cout * 4,
        "transposed convolution weight size"
    );
    if hw == 0 {
        return (vec![0.0; x.len()], vec![0.0; w_pt.len()], vec![0.0; cout]);
    }
    let mut dx = vec![0.0f32; n * cin * hw];
    let mut dw = vec![0.0f32; cin * cout * 4];
    let mut taps = vec![0.0f32; cout * 4 * hw];
    for i in 0..n {
        let g = &dy[i * cout * 4 * hw..][..cout * 4 * hw];
        taps.par_chunks_mut(4 * hw).enumerate().for_each(|(co, t)| {
            let plane = &g[co * 4 * hw..][..4 * hw];
            for (oy, row) in plane.chunks_exact(2 * w).enumerate() {
                let (yy, ty) = (oy / 2, oy % 2);
                for (xx, pair) in row.chunks_exact(2).enumerate() {
                    t[(ty * 2) * hw + yy * w + xx] = pair[0];
                    t[(ty * 2 + 1) * hw + yy * w + xx] = pair[1];
                }
            }
        });
        matmul_acc(
            w_pt,
            &taps,
            cin,
            cout * 4,
            hw,
            &mut dx[i * cin * hw..][..cin * hw],
        );
        let xi = &x[i * cin * hw..][..cin * hw];
        // SAFETY: xi is [cin, hw], taps [cout * 4, hw] read transposed, dw [cin, cout * 4].
        unsafe {
            gemm_strided_acc(
                cin,
                cout * 4,
                hw,
                xi.as_ptr(),
                hw as isize,
                1,
                taps.as_ptr(),
                1,
                hw as isize,
                dw.as_mut_ptr(),
                cout * 4,
                1,
                parallel_for(cin, hw, cout * 4),
            );
        }
    }
    (dx, dw, bias_grad(dy, n, cout, 4 * hw))
}

/// Prepared weights of a `ConvTranspose2d(cin, cout, kernel_size=2, stride=2)`.
#[derive(Clone, Debug)]
pub struct ConvTranspose2x2 {
    /// `[cout * 4, cin]`, row `co * 4 + dy * 2 + dx`.
    wm: Vec<f32>,
    /// `wm` as bf16 rows, when the layer computes in bf16.
    wm_bf16: Option<Rows>,
    pub b: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
}

impl ConvTranspose2x2 {
    /// `w` in PyTorch's layout `[cin, cout, 2, 2]`; `bias` defaults to zeros.
    pub fn new(w: &[f32], bias: Option<Vec<f32>>, cin: usize, cout: usize) -> Self {
        assert_eq!(
            w.len(),
            cin * cout * 4,
            "transposed convolution weight size"
        );
        let mut wm = vec![0.0f32; cout * 4 * cin];
        for ci in 0..cin {
            for co in 0..cout {
                for t in 0..4 {
                    wm[(co * 4 + t) * cin + ci] = w[(ci * cout + co) * 4 + t];
                }
            }
        }
        let b = bias.unwrap_or_else(|| vec![0.0; cout]);
        Self {
            wm,
            wm_bf16: None,
            b,
            cin,
            cout,
        }
    }

    /// The layer computing its product in `precision` on `[cin, h, w]` maps
    /// ([`forward`](Self::forward), [`forward_into`](Self::forward_into),
    /// [`forward_add`](Self::forward_add)); the row layouts stay in f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.wm_bf16 =
            (precision == Precision::Bf16).then(|| Rows::new(&self.wm, self.cout * 4, self.cin));
        self
    }

    /// The four taps' products `[cout * 4, h * w]` of `x [cin, h * w]`.
    fn taps(&self, x: &[f32], hw: usize) -> Vec<f32> {
        match &self.wm_bf16 {
            Some(rows) => bf16::matmul(rows, x, hw),
            None => matmul(&self.wm, x, self.cout * 4, self.cin, hw),
        }
    }

    /// `[cin, h, w]` -> `[cout, 2h, 2w]`.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        self.forward_add(x, h, w, None, act)
    }

    /// [`forward`](Self::forward) into `out` (`[cout, 2h, 2w]`), e.g. one image's part of a
    /// batch.
    pub fn forward_into(&self, x: &[f32], h: usize, w: usize, act: Activation, out: &mut [f32]) {
        let y = self.taps(x, h * w);
        self.scatter(h, w, None, act, &y, out);
    }

    /// `act(convt(x) + skip)`, `skip` `[cout, 2h, 2w]` added before the activation (SAM 2's
    /// high-resolution features).
    pub fn forward_add(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
    ) -> Vec<f32> {
        let y = self.taps(x, h * w);
        let mut out = vec![0.0f32; self.cout * 4 * h * w];
        self.scatter(h, w, skip, act, &y, &mut out);
        out
    }

    /// The same from position rows `[h * w, cin]`.
    pub fn forward_rows(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        self.forward_rows_add(x, h, w, None, act)
    }

    /// [`forward_add`](Self::forward_add) from position rows `[h * w, cin]`.
    pub fn forward_rows_add(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
    ) -> Vec<f32> {
        // `W x^T`: the products come out per output channel and tap, positions contiguous.
        let y = matmul_nt(&self.wm, x, self.cout * 4, self.cin, h * w);
        let mut out = vec![0.0f32; self.cout * 4 * h * w];
        self.scatter(h, w, skip, act, &y, &mut out);
        out
    }

    /// `act(norm(convt(x) + skip))` from position rows `[h * w, cin]`, `norm` a LayerNorm
    /// over the channels at each output position (SAM's first upscaling): one pass over the
    /// output, a pair of output rows at a time (scattered, normalised and activated in cache).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows_norm(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        norm: (&[f32], &[f32], f32),
        act: Activation,
    ) -> Vec<f32> {
        let (cout, hw) = (self.cout, h * w);
        let (oh, ow) = (2 * h, 2 * w);
        assert_eq!(norm.0.len(), cout, "norm width");
        if let Some(s) = skip {
            assert_eq!(s.len(), cout * oh * ow, "skip size");
        }
        let y = &matmul_nt(&self.wm, x, cout * 4, self.cin, hw);
        let fill = |out: *mut f32| {
            let dst = SendPtr(out);
            (0..h).into_par_iter().for_each(|yy| {
                // [cout, 2 rows of ow]: output rows 2yy and 2yy + 1 of every channel
                let mut blk = vec![0.0f32; cout * 2 * ow];
                for (co, rows) in blk.chunks_exact_mut(2 * ow).enumerate() {
                    for (dy, row) in rows.chunks_exact_mut(ow).enumerate() {
                        let oy = 2 * yy + dy;
                        let skip_row = skip.map(|s| &s[co * oh * ow + oy * ow..][..ow]);
                        self.output_row(y, hw, w, co, oy, skip_row, row);
                    }
                }
                layer_norm2d_block(&mut blk, norm.0, norm.1, norm.2);
                act.apply(&mut blk);
                for (co, rows) in blk.chunks_exact(2 * ow).enumerate() {
                    // SAFETY: task `yy` writes only output rows 2yy and 2yy + 1 of each channel
                    // (2 * ow values at `co * oh * ow + 2 * yy * ow`), disjoint from other tasks'.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            rows.as_ptr(),
                            dst.get().add(co * oh * ow + 2 * yy * ow),
                            2 * ow,
                        )
                    };
                }
            });
        };
        // SAFETY: the tasks together write output rows 2yy and 2yy + 1 of every channel for
        // every yy < h: the whole map.
        unsafe { written(cout * oh * ow, fill) }
    }

    /// `proj @ act(convt(x) + skip)` for `x` `[cin, h, w]` and `proj` `[m, cout]` ->
    /// `[m, 2h, 2w]` (SAM's masks: the hypernetworks' weights on the last upscaling). A band of
    /// input rows at a time, bands in parallel: each band's product, activation and projection
    /// stay in cache, and the `[cout, 2h, 2w]` map is never held whole.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_projected(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
        proj: &[f32],
        m: usize,
    ) -> Vec<f32> {
        let (cin, cout, hw) = (self.cin, self.cout, h * w);
        let (oh, ow) = (2 * h, 2 * w);
        assert_eq!(x.len(), cin * hw, "transposed convolution input size");
        assert_eq!(proj.len(), m * cout, "projection size");
        if let Some(s) = skip {
            assert_eq!(s.len(), cout * oh * ow, "skip size");
        }
        // About 256 KiB of products per band.
        let rows = ((1usize << 16) / (cout * 4 * w).max(1)).clamp(1, h.max(1));
        let bands: Vec<(usize, Vec<f32>)> = (0..h.div_ceil(rows))
            .into_par_iter()
            .map(|bi| {
                let r0 = bi * rows;
                let nr = rows.min(h - r0);
                let p = nr * w;
                // wm [cout * 4, cin] @ the band of x, [cin, p] with row stride hw
                let mut y = product(cout * 4, p, cin, &self.wm, cin, 1, &x[r0 * w..], hw, 1);
                for (row, vals) in y.chunks_exact_mut(p).enumerate() {
                    let (co, t) = (row / 4, row % 4);
                    let b = self.b[co];
                    vals.iter_mut().for_each(|v| *v += b);
                    if let Some(s) = skip {
                        let (dy, dx) = (t / 2, t % 2);
                        let plane = &s[co * oh * ow..(co + 1) * oh * ow];
                        for (i, v) in vals.iter_mut().enumerate() {
                            let (yy, xx) = (r0 + i / w, i % w);
                            *v += plane[(2 * yy + dy) * ow + 2 * xx + dx];
                        }
                    }
                }
                act.apply(&mut y);
                // [m, cout] @ y as [cout, 4p] (each channel's four taps side by side): every
                // tap's projection in one product, `[m, 4, p]`, then each input row's values
                // interleaved into output rows 2yy + dy.
                let taps = product(m, 4 * p, cout, proj, cout, 1, &y, 4 * p, 1);
                let mut band = vec![0.0f32; m * 4 * p];
                for (dst, src) in band.chunks_exact_mut(4 * p).zip(taps.chunks_exact(4 * p)) {
                    for (t, tap) in src.chunks_exact(p).enumerate() {
                        let (dy, dx) = (t / 2, t % 2);
                        for (yy, vals) in tap.chunks_exact(w).enumerate() {
                            let row = &mut dst[(2 * yy + dy) * ow..(2 * yy + dy + 1) * ow];
                            for (pair, &v) in row.chunks_exact_mut(2).zip(vals) {
                                pair[dx] = v;
                            }
                        }
                    }
                }
                (r0, band)
            })
            .collect();
        let mut out = vec![0.0f32; m * oh * ow];
        for (r0, band) in bands {
            let len = band.len() / m;
            for mi in 0..m {
                out[mi * oh * ow + 2 * r0 * ow..][..len]
                    .copy_from_slice(&band[mi * len..(mi + 1) * len]);
            }
        }
        out
    }

    /// Output row `oy` (`2w` values) of channel `co` from the products `y` `[cout * 4, hw]`:
    /// taps (dy, 0) and (dy, 1) of input row `oy / 2` interleaved, plus the bias and the
    /// skip's row, in one sequential pass while the row is in cache.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn output_row(
        &self,
        y: &[f32],
        hw: usize,
        w: usize,
        co: usize,
        oy: usize,
        skip_row: Option<&[f32]>,
        row: &mut [f32],
    ) {
        let (yy, dy) = (oy / 2, oy % 2);
        let b = self.b[co];
        let tap = |dx: usize| &y[(co * 4 + dy * 2 + dx) * hw + yy * w..][..w];
        let (left, right) = (tap(0), tap(1));
        for ((pair, &l), &r) in row.chunks_exact_mut(2).zip(left).zip(right) {
            pair[0] = l + b;
            pair[1] = r + b;
        }
        if let Some(s) = skip_row {
            row.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
    }

    /// `y` `[cout * 4, h * w]` -> `out` `[cout, 2h, 2w]` with the bias, `skip` and `act`.
    fn scatter(
        &self,
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
        y: &[f32],
        out: &mut [f32],
    ) {
        let (oh, ow) = (2 * h, 2 * w);
        assert_eq!(
            out.len(),
            self.cout * oh * ow,
            "transposed convolution output size"
        );
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(co, plane)| {
                let skip = skip.map(|s| &s[co * oh * ow..(co + 1) * oh * ow]);
                vectorized(
                    #[inline(always)]
                    || {
                        for (oy, row) in plane.chunks_exact_mut(ow).enumerate() {
                            let skip_row = skip.map(|s| &s[oy * ow..(oy + 1) * ow]);
                            self.output_row(y, h * w, w, co, oy, skip_row, row);
                        }
                    },
                );
                act.apply(plane);
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                v as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn projected_forward_equals_forward_then_product() {
        let (cin, cout, h, w, m) = (6, 5, 7, 9, 3);
        let op =
            ConvTranspose2x2::new(&values(cin * cout * 4, 1), Some(values(cout, 2)), cin, cout);
        let x = values(cin * h * w, 3);
        let skip = values(cout * 4 * h * w, 4);
        let proj = values(m * cout, 5);
        for s in [None, Some(&skip[..])] {
            let full = op.forward_add(&x, h, w, s, Activation::Gelu);
            let want = matmul(&proj, &full, m, cout, 4 * h * w);
            let got = op.forward_projected(&x, h, w, s, Activation::Gelu, &proj, m);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// In bf16 the layer is the f32 layer on the bf16-rounded weights and input, up to the
    /// order of the sums.
    #[test]
    fn bf16_equals_f32_on_the_rounded_operands() {
        let (cin, cout, h, w) = (37, 6, 5, 11);
        let (wt, b, x) = (
            values(cin * cout * 4, 1),
            values(cout, 2),
            values(cin * h * w, 3),
        );
        let round = |v: &[f32]| v.iter().map(|&v| bf16::round(v)).collect::<Vec<_>>();
        let got = ConvTranspose2x2::new(&wt, Some(b.clone()), cin, cout)
            .with_precision(Precision::Bf16)
            .forward(&x, h, w, Activation::Relu);
        let want = ConvTranspose2x2::new(&round(&wt), Some(b), cin, cout).forward(
            &round(&x),
            h,
            w,
            Activation::Relu,
        );
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
