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
        crate::models::host::gemm_strided(
            m,
            n,
            k,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            ldb as isize,
            1,
            dst,
            ldd,
            par,
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
                    unsafe { std::ptr::copy_nonoverlapping(orow.as_ptr(), ptr.0.add(o), 2 * w) };
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
