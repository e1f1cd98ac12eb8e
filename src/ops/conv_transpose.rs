//! Transposed convolution with kernel 2 and stride 2 (U-Net's up-convolution, SAM's upscaling,
//! Mask R-CNN's mask head): every input pixel owns its 2x2 output block, so the layer is one
//! matrix product `[cout * 4, cin] @ [cin, h * w]` and a scatter.

use super::activation::Activation;
use super::conv_backward::bias_grad;
use super::matmul::{gemm_strided_acc, matmul, matmul_acc, matmul_nt, parallel_for};
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
        Self { wm, b, cin, cout }
    }

    /// `[cin, h, w]` -> `[cout, 2h, 2w]`.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        self.forward_add(x, h, w, None, act)
    }

    /// [`forward`](Self::forward) into `out` (`[cout, 2h, 2w]`), e.g. one image's part of a
    /// batch.
    pub fn forward_into(&self, x: &[f32], h: usize, w: usize, act: Activation, out: &mut [f32]) {
        let y = matmul(&self.wm, x, self.cout * 4, self.cin, h * w);
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
        let y = matmul(&self.wm, x, self.cout * 4, self.cin, h * w);
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
                let b = self.b[co];
                let skip = skip.map(|s| &s[co * oh * ow..(co + 1) * oh * ow]);
                // Output row `2 yy + dy` interleaves taps (dy, 0) and (dy, 1) of input row `yy`:
                // one sequential pass per row, the skip added while the row is in cache.
                vectorized(
                    #[inline(always)]
                    || {
                        for (oy, row) in plane.chunks_exact_mut(ow).enumerate() {
                            let (yy, dy) = (oy / 2, oy % 2);
                            let tap =
                                |dx: usize| &y[(co * 4 + dy * 2 + dx) * h * w + yy * w..][..w];
                            let (left, right) = (tap(0), tap(1));
                            for ((pair, &l), &r) in row.chunks_exact_mut(2).zip(left).zip(right) {
                                pair[0] = l + b;
                                pair[1] = r + b;
                            }
                            if let Some(s) = skip {
                                row.iter_mut()
                                    .zip(&s[oy * ow..(oy + 1) * ow])
                                    .for_each(|(a, b)| *a += b);
                            }
                        }
                    },
                );
                act.apply(plane);
            });
    }
}
