//! A CPU inference engine for the folded U-Net: the whole forward pass on host buffers, with each
//! 3x3 convolution computed as tiled im2col + one matrix product (the `gemm` crate, which burn's
//! flex backend also uses) whose output is written straight into the NCHW result, and the bias
//! and ReLU applied to each tile while it is still in cache. Skip connections are concatenated by
//! placing the two halves next to each other, with no copy.
//!
//! Same function as `UNet::fold_batchnorm().forward` (checked in the tests), built only for speed
//! on the CPU.

use super::config::Upsampling;
use super::unet::UNet;
use crate::models::tensor_io::to_vec;
use burn::prelude::*;
use rayon::prelude::*;

struct Conv {
    /// `[cout, cin * k * k]`, row-major.
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    /// 3x3 kernels in the Winograd domain: 16 matrices `[cout, cin]`.
    wino: Option<Vec<f32>>,
}

struct UpT {
    /// Per (dy, dx): `[cout, cin]` row-major.
    w: [Vec<f32>; 4],
    b: Vec<f32>,
    cin: usize,
    cout: usize,
}

enum Up {
    Transpose(UpT),
    Bilinear(Conv),
}

struct Block {
    c1: Conv,
    c2: Conv,
}

/// The folded network as host buffers.
pub struct CpuUNet {
    enc: Vec<Block>,
    bottleneck: Block,
    up: Vec<Up>,
    dec: Vec<Block>,
    out: Conv,
    pub stride: usize,
    pub num_classes: usize,
}

fn conv_of(c: &burn::nn::conv::Conv2d) -> Conv {
    let [cout, cin, k, _]: [usize; 4] = c.weight.shape().dims();
    let w = to_vec(c.weight.val());
    let b = c
        .bias
        .as_ref()
        .map(|b| to_vec(b.val()))
        .unwrap_or_else(|| vec![0.0; cout]);
    let wino = (k == 3).then(|| winograd_weights(&w, cout, cin));
    Conv {
        w,
        b,
        cin,
        cout,
        k,
        wino,
    }
}

/// `U = G g G^T` for every 3x3 kernel, laid out as 16 matrices `[cout, cin]` (Winograd F(2x2, 3x3),
/// Lavin & Gray 2016).
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

fn block_of(d: &super::double_conv::DoubleConv) -> Block {
    assert!(
        d.bn1.is_none() && d.bn2.is_none(),
        "CpuUNet needs a BatchNorm-folded U-Net"
    );
    Block {
        c1: conv_of(&d.conv1),
        c2: conv_of(&d.conv2),
    }
}

impl CpuUNet {
    /// Builds the engine from any U-Net (BatchNorm is folded first).
    pub fn new(model: &UNet) -> Self {
        let f = model.valid().fold_batchnorm();
        let up =
            f.up.iter()
                .map(|u| match (&u.transpose, &u.conv1x1, f.config.upsampling) {
                    (Some(t), _, Upsampling::Transpose) => {
                        let [cin, cout, _, _]: [usize; 4] = t.weight.shape().dims();
                        let w = to_vec(t.weight.val()); // [cin, cout, 2, 2]
                        let per = |dy: usize, dx: usize| {
                            let mut m = vec![0.0; cout * cin];
                            for ci in 0..cin {
                                for co in 0..cout {
                                    m[co * cin + ci] = w[((ci * cout + co) * 2 + dy) * 2 + dx];
                                }
                            }
                            m
                        };
                        let b = t
                            .bias
                            .as_ref()
                            .map(|b| to_vec(b.val()))
                            .unwrap_or_else(|| vec![0.0; cout]);
                        Up::Transpose(UpT {
                            w: [per(0, 0), per(0, 1), per(1, 0), per(1, 1)],
                            b,
                            cin,
                            cout,
                        })
                    }
                    (_, Some(c), _) => Up::Bilinear(conv_of(c)),
                    _ => unreachable!("UpConv without layers"),
                })
                .collect();
        Self {
            enc: f.enc.iter().map(block_of).collect(),
            bottleneck: block_of(&f.bottleneck),
            up,
            dec: f.dec.iter().map(block_of).collect(),
            out: conv_of(&f.out_conv),
            stride: f.config.stride(),
            num_classes: f.config.num_classes,
        }
    }

    /// Logits `[classes, H, W]` for one normalised CHW image whose sides are multiples of the stride.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        assert!(
            h % self.stride == 0 && w % self.stride == 0,
            "input {h}x{w} is not a multiple of {}",
            self.stride
        );
        let mut skips: Vec<(Vec<f32>, usize, usize)> = Vec::new();
        let (mut cur, mut ch, mut cw) = (x.to_vec(), h, w);
        for b in &self.enc {
            let y = conv_relu(&b.c2, &conv_relu(&b.c1, &cur, ch, cw, true), ch, cw, true);
            cur = maxpool2(&y, b.c2.cout, ch, cw);
            skips.push((y, ch, cw));
            ch /= 2;
            cw /= 2;
        }
        cur = conv_relu(
            &self.bottleneck.c2,
            &conv_relu(&self.bottleneck.c1, &cur, ch, cw, true),
            ch,
            cw,
            true,
        );
        for i in (0..self.dec.len()).rev() {
            let (skip, sh, sw) = &skips[i];
            let mut cat = match &self.up[i] {
                Up::Transpose(t) => up_transpose(t, &cur, ch, cw),
                Up::Bilinear(c) => {
                    conv_relu(c, &bilinear2x(&cur, c.cin, ch, cw), 2 * ch, 2 * cw, false)
                }
            };
            ch = *sh;
            cw = *sw;
            cat.extend_from_slice(skip);
            let d = &self.dec[i];
            cur = conv_relu(&d.c2, &conv_relu(&d.c1, &cat, ch, cw, true), ch, cw, true);
        }
        conv_relu(&self.out, &cur, ch, cw, false)
    }
}

/// `dst[m x n] = a[m x k] * b[k x n]` with row strides `lda`, `ldb`, `ldd` (row-major).
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    dst: *mut f32,
    ldd: usize,
) {
    matmul_par(m, n, k, a, lda, b, ldb, dst, ldd, false)
}

/// [`matmul`], optionally spread over rayon's threads (when the caller has too little work to
/// split by itself).
#[allow(clippy::too_many_arguments)]
fn matmul_par(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    dst: *mut f32,
    ldd: usize,
    par: bool,
) {
    // SAFETY: callers pass slices whose extents cover the given shapes and strides, and `dst`
    // points to at least `(m - 1) * ldd + n` writable floats not aliased by `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ldd as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            if par {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        )
    }
}

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// k x k convolution (padding k/2), + bias, optional ReLU. Tiles of output rows run in parallel.
fn conv_relu(c: &Conv, x: &[f32], h: usize, w: usize, relu: bool) -> Vec<f32> {
    let hw = h * w;
    assert_eq!(x.len(), c.cin * hw);
    let mut out = vec![0.0f32; c.cout * hw];
    let kk = c.k * c.k;
    let kdim = c.cin * kk;
    if c.k == 1 {
        let rows_per = (hw / rayon::current_num_threads().max(1)).max(1024);
        let ptr = SendPtr(out.as_mut_ptr());
        (0..hw.div_ceil(rows_per)).into_par_iter().for_each(|t| {
            let p0 = t * rows_per;
            let n = rows_per.min(hw - p0);
            let _ = &ptr;
            matmul(
                c.cout,
                n,
                c.cin,
                &c.w,
                c.cin,
                &x[p0..],
                hw,
                unsafe { ptr.0.add(p0) },
                hw,
            );
            finish(ptr.0, &c.b, hw, p0, n, relu);
        });
        return out;
    }
    if let Some(u) = &c.wino
        && h % 2 == 0
        && w % 2 == 0
    {
        winograd_conv(c, u, x, h, w, relu, &mut out);
        return out;
    }
    let pad = c.k / 2;
    // Rows per tile: about 2048 output pixels, so the im2col tile stays in cache.
    let tile_rows = (2048 / w).clamp(1, h);
    let tiles = h.div_ceil(tile_rows);
    let ptr = SendPtr(out.as_mut_ptr());
    (0..tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |col: &mut Vec<f32>, t| {
            let _ = &ptr;
            let y0 = t * tile_rows;
            let rows = tile_rows.min(h - y0);
            let n = rows * w;
            col.clear();
            col.resize(kdim * n, 0.0);
            for ci in 0..c.cin {
                let plane = &x[ci * hw..(ci + 1) * hw];
                for ky in 0..c.k {
                    for kx in 0..c.k {
                        let r = (ci * kk + ky * c.k + kx) * n;
                        let dst = &mut col[r..r + n];
                        for yy in 0..rows {
                            let sy = (y0 + yy + ky) as isize - pad as isize;
                            let drow = &mut dst[yy * w..(yy + 1) * w];
                            if sy < 0 || sy >= h as isize {
                                drow.fill(0.0);
                                continue;
                            }
                            let srow = &plane[sy as usize * w..(sy as usize + 1) * w];
                            let shift = kx as isize - pad as isize;
                            if shift == 0 {
                                drow.copy_from_slice(srow);
                            } else if shift > 0 {
                                let s = shift as usize;
                                drow[..w - s].copy_from_slice(&srow[s..]);
                                drow[w - s..].fill(0.0);
                            } else {
                                let s = (-shift) as usize;
                                drow[s..].copy_from_slice(&srow[..w - s]);
                                drow[..s].fill(0.0);
                            }
                        }
                    }
                }
            }
            let p0 = y0 * w;
            matmul(
                c.cout,
                n,
                kdim,
                &c.w,
                kdim,
                col,
                n,
                unsafe { ptr.0.add(p0) },
                hw,
            );
            finish(ptr.0, &c.b, hw, p0, n, relu);
        });
    out
}

/// 3x3 convolution (padding 1) by Winograd F(2x2, 3x3): input tiles to the transform domain,
/// 16 matrix products over the channels, 2x2 output tiles back; 2.25x fewer multiplications
/// than the direct method. Blocks of tile rows run in parallel.
fn winograd_conv(c: &Conv, u: &[f32], x: &[f32], h: usize, w: usize, relu: bool, out: &mut [f32]) {
    let (th, tw) = (h / 2, w / 2);
    let hw = h * w;
    let (cin, cout) = (c.cin, c.cout);
    // Tiles per block: the transformed input block (16 x cin x tiles) stays around 2 MB.
    let target = (32768 / cin.max(1)).clamp(64, 512);
    let block_rows = (target / tw).clamp(1, th);
    let blocks = th.div_ceil(block_rows);
    // Deep levels have few blocks: then the products themselves are spread over the threads.
    let par_inner = blocks < rayon::current_num_threads();
    let ptr = SendPtr(out.as_mut_ptr());
    (0..blocks).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, m): &mut (Vec<f32>, Vec<f32>), bi| {
            let _ = &ptr;
            let ty0 = bi * block_rows;
            let rows = block_rows.min(th - ty0);
            let nt = rows * tw;
            v.clear();
            v.resize(16 * cin * nt, 0.0);
            m.clear();
            m.resize(16 * cout * nt, 0.0);
            let at = |plane: &[f32], yy: isize, xx: isize| -> f32 {
                if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                    0.0
                } else {
                    plane[yy as usize * w + xx as usize]
                }
            };
            for ci in 0..cin {
                let plane = &x[ci * hw..(ci + 1) * hw];
                for r in 0..rows {
                    let ty = ty0 + r;
                    for tx in 0..tw {
                        let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
                        let mut d = [[0.0f32; 4]; 4];
                        let interior =
                            y0 >= 0 && x0 >= 0 && y0 + 4 <= h as isize && x0 + 4 <= w as isize;
                        for (i, row) in d.iter_mut().enumerate() {
                            if interior {
                                let o = (y0 as usize + i) * w + x0 as usize;
                                row.copy_from_slice(&plane[o..o + 4]);
                            } else {
                                for (j, v) in row.iter_mut().enumerate() {
                                    *v = at(plane, y0 + i as isize, x0 + j as isize);
                                }
                            }
                        }
                        // B^T d
                        let mut t = [[0.0f32; 4]; 4];
                        for j in 0..4 {
                            t[0][j] = d[0][j] - d[2][j];
                            t[1][j] = d[1][j] + d[2][j];
                            t[2][j] = d[2][j] - d[1][j];
                            t[3][j] = d[1][j] - d[3][j];
                        }
                        // (B^T d) B
                        let ti = r * tw + tx;
                        for (i, tr) in t.iter().enumerate() {
                            let vals = [tr[0] - tr[2], tr[1] + tr[2], tr[2] - tr[1], tr[1] - tr[3]];
                            for (j, val) in vals.iter().enumerate() {
                                v[((i * 4 + j) * cin + ci) * nt + ti] = *val;
                            }
                        }
                    }
                }
            }
            for xi in 0..16 {
                matmul_par(
                    cout,
                    nt,
                    cin,
                    &u[xi * cout * cin..(xi + 1) * cout * cin],
                    cin,
                    &v[xi * cin * nt..(xi + 1) * cin * nt],
                    nt,
                    m[xi * cout * nt..].as_mut_ptr(),
                    nt,
                    par_inner,
                );
            }
            for co in 0..cout {
                let b = c.b[co];
                for r in 0..rows {
                    let ty = ty0 + r;
                    for tx in 0..tw {
                        let ti = r * tw + tx;
                        let mm = |i: usize, j: usize| m[((i * 4 + j) * cout + co) * nt + ti];
                        // A^T M
                        let mut s = [[0.0f32; 4]; 2];
                        for j in 0..4 {
                            s[0][j] = mm(0, j) + mm(1, j) + mm(2, j);
                            s[1][j] = mm(1, j) - mm(2, j) - mm(3, j);
                        }
                        for (a, sr) in s.iter().enumerate() {
                            let mut y0 = sr[0] + sr[1] + sr[2] + b;
                            let mut y1 = sr[1] - sr[2] - sr[3] + b;
                            if relu {
                                y0 = y0.max(0.0);
                                y1 = y1.max(0.0);
                            }
                            let o = co * hw + (2 * ty + a) * w + 2 * tx;
                            // SAFETY: each block writes only its own tile rows of every channel.
                            unsafe {
                                *ptr.0.add(o) = y0;
                                *ptr.0.add(o + 1) = y1;
                            }
                        }
                    }
                }
            }
        },
    );
}

/// Adds the bias (and ReLU) to the columns `p0..p0+n` of every output channel.
fn finish(out: *mut f32, bias: &[f32], hw: usize, p0: usize, n: usize, relu: bool) {
    for (co, &b) in bias.iter().enumerate() {
        // SAFETY: each tile owns columns p0..p0+n of every channel; tiles do not overlap.
        let row = unsafe { std::slice::from_raw_parts_mut(out.add(co * hw + p0), n) };
        if relu {
            row.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
        } else {
            row.iter_mut().for_each(|v| *v += b);
        }
    }
}

fn maxpool2(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for y in 0..oh {
            let r0 = &p[2 * y * w..2 * y * w + w];
            let r1 = &p[(2 * y + 1) * w..(2 * y + 1) * w + w];
            for xx in 0..ow {
                o[y * ow + xx] = r0[2 * xx]
                    .max(r0[2 * xx + 1])
                    .max(r1[2 * xx])
                    .max(r1[2 * xx + 1]);
            }
        }
    });
    out
}

/// ConvTranspose2d(kernel 2, stride 2): four matrix products, interleaved into the output.
fn up_transpose(t: &UpT, x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let (oh, ow) = (2 * h, 2 * w);
    let parts: Vec<Vec<f32>> = (0..4)
        .into_par_iter()
        .map(|d| {
            let mut tmp = vec![0.0f32; t.cout * hw];
            matmul(
                t.cout,
                hw,
                t.cin,
                &t.w[d],
                t.cin,
                x,
                hw,
                tmp.as_mut_ptr(),
                hw,
            );
            tmp
        })
        .collect();
    let mut out = vec![0.0f32; t.cout * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(co, o)| {
        let b = t.b[co];
        for (d, part) in parts.iter().enumerate() {
            let (dy, dx) = (d / 2, d % 2);
            let src = &part[co * hw..(co + 1) * hw];
            for y in 0..h {
                let orow = &mut o[(2 * y + dy) * ow..(2 * y + dy + 1) * ow];
                let srow = &src[y * w..(y + 1) * w];
                for xx in 0..w {
                    orow[2 * xx + dx] = srow[xx] + b;
                }
            }
        }
    });
    out
}

/// Bilinear 2x up-sampling, align_corners = false (PyTorch's `nn.Upsample(scale_factor=2)`).
fn bilinear2x(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (2 * h, 2 * w);
    let coord = |o: usize, n: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) * 0.5 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, s - i0 as f32)
    };
    let ys: Vec<_> = (0..oh).map(|o| coord(o, h)).collect();
    let xs: Vec<_> = (0..ow).map(|o| coord(o, w)).collect();
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                let top = p[y0 * w + x0] * (1.0 - fx) + p[y0 * w + x1] * fx;
                let bot = p[y1 * w + x0] * (1.0 - fx) + p[y1 * w + x1] * fx;
                o[oy * ow + ox] = top * (1.0 - fy) + bot * fy;
            }
        }
    });
    out
}
