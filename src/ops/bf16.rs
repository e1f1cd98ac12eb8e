//! bfloat16 products for inference ([`Precision::Bf16`]): weights rounded to bf16 once at
//! load, activations as they enter each product, the products summed in f32, as the
//! AVX512_BF16 instruction `vdpbf16ps` computes them (two multiply-adds per f32 lane, 32 per
//! instruction: twice f32 FMA's rate, half its bytes).
//!
//! Operands are packed for that instruction: the left one as [`Rows`] (each row's values in
//! pairs along the reduction), the right one as [`Panels`] of [`TILE_COLS`] columns with the
//! pair of values at reduction steps `2p`, `2p + 1` next to each other. [`product`] walks
//! tiles of [`TILE_ROWS`] x [`TILE_COLS`] and hands each finished tile to the caller:
//! - on CPUs with AVX512_BF16 the tile stays in 24 zmm registers (`native_tile`);
//! - elsewhere a portable kernel computes the same sums (`portable_tile`): the product of two
//!   bf16 values is exact in f32, so it differs from the instruction only in the order of the
//!   additions and in denormals, which `vdpbf16ps` flushes. That is how the packing, the
//!   driver and every model's bf16 accuracy are tested on any CPU, and the native kernel is
//!   checked against it before its first use.
//!
//! Without the instruction bf16 is no faster than f32, only less accurate, so the CLI runs
//! f32 there ([`Precision::on_this_cpu`]); the library honours what it is asked for.

use super::activation::Activation;
use super::matmul::{Epilogue, SendPtr, written};
use super::simd::vectorized;
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The arithmetic of an inference engine's products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 throughout: the reference implementations' numbers to ~1e-6.
    #[default]
    F32,
    /// Dense layers and dense convolutions on bf16 operands with f32 sums; everything else
    /// (attention's scores, norms, depthwise and transposed convolutions) in f32.
    Bf16,
}

impl Precision {
    /// What runs when `self` is asked for on this CPU, and a message when that is not `self`:
    /// bf16 needs AVX512_BF16, without which it would be no faster than f32, only less
    /// accurate.
    pub fn on_this_cpu(self) -> (Precision, Option<String>) {
        match self {
            Precision::Bf16 if !has_native() => (
                Precision::F32,
                Some(
                    "bf16 needs a CPU with AVX512_BF16 (vdpbf16ps: Intel Cooper Lake / Sapphire \
                     Rapids, AMD Zen 4 and later); this one has none, where bf16 would be no \
                     faster than f32, only less accurate: running in f32"
                        .into(),
                ),
            ),
            p => (p, None),
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!("unknown precision '{s}' (f32 or bf16)")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as its 16 bits; NaNs stay NaNs.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 of a bf16 (exact).
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bf16 value.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Every value of `x` rounded to the nearest bf16 value.
pub fn round_all(x: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || x.iter_mut().for_each(|v| *v = round(*v)),
    )
}

/// Rows of a tile of [`product`]: 24 of AVX-512's 32 registers hold a tile, two a step of
/// the right operand, one a broadcast pair of the left.
pub const TILE_ROWS: usize = 12;
/// Columns of a tile of [`product`] (and of a [`Panels`] panel): two 16-lane registers.
pub const TILE_COLS: usize = 32;

/// A finished tile of [`product`]: `tile[i][j]` is element (`i0 + i`, `c0 + j`).
pub type Tile = [[f32; TILE_COLS]; TILE_ROWS];

/// Rows of the left operand per task of [`product`]: four tiles re-read from L2 for each
/// panel of the right operand.
const BLOCK_ROWS: usize = 4 * TILE_ROWS;

/// The left operand of [`product`]: `m` rows of `k` values as bf16, each row padded to an
/// even length `2 * kp` and the rows to whole tiles, with zeros.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    data: Vec<u16>,
    pub m: usize,
    pub k: usize,
    kp: usize,
}

impl Rows {
    /// From `x [m, k]`, row-major; rows converted in parallel when there are many.
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(
            x.len() >= m * k,
            "bf16 rows: {} values for {m} x {k}",
            x.len()
        );
        let kp = k.div_ceil(2);
        let mut data = vec![0u16; m.div_ceil(TILE_ROWS) * TILE_ROWS * 2 * kp];
        let convert = |(i, row): (usize, &mut [u16])| {
            if i < m {
                vectorized(
                    #[inline(always)]
                    || {
                        for (d, &v) in row.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                            *d = to_bf16(v);
                        }
                    },
                )
            }
        };
        if m * k >= 1 << 16 && rayon::current_thread_index().is_none() {
            data.par_chunks_mut(2 * kp).enumerate().for_each(convert);
        } else if kp > 0 {
            data.chunks_mut(2 * kp).enumerate().for_each(convert);
        }
        Self { data, m, k, kp }
    }
}

/// The right operand of [`product`], `[k, n]`, in panels of [`TILE_COLS`] columns:
/// `[n / TILE_COLS][k / 2][TILE_COLS][2]` bf16, the values at reduction steps `2p` and
/// `2p + 1` of a column side by side (one 32-bit lane of `vdpbf16ps`), zero-padded.
#[derive(Clone, Debug, Default)]
pub struct Panels {
    data: Vec<u16>,
    pub k: usize,
    pub n: usize,
    kp: usize,
}

impl Panels {
    /// From `w [n, k]`, a dense layer's weight (PyTorch's `[out, in]`): the product's
    /// columns are its rows.
    pub fn from_rows(w: &[f32], n: usize, k: usize) -> Self {
        assert!(
            w.len() >= n * k,
            "bf16 panels: {} values for {n} x {k}",
            w.len()
        );
        let mut p = Self::sized(k, n);
        if k == 0 {
            return p;
        }
        let kp = p.kp;
        for (j, row) in w.chunks_exact(k.max(1)).take(n).enumerate() {
            let panel = &mut p.data[(j / TILE_COLS) * kp * 2 * TILE_COLS..];
            let c = j % TILE_COLS;
            for (l, &v) in row.iter().enumerate() {
                panel[(l / 2) * 2 * TILE_COLS + 2 * c + l % 2] = to_bf16(v);
            }
        }
        p
    }

    /// The `[n, k]` matrix [`from_rows`](Self::from_rows) packed, as f32 (exactly).
    pub fn to_rows(&self) -> Vec<f32> {
        let (k, n, kp) = (self.k, self.n, self.kp);
        let mut w = vec![0.0f32; n * k];
        for (j, row) in w.chunks_exact_mut(k.max(1)).take(n).enumerate() {
            let panel = &self.data[(j / TILE_COLS) * kp * 2 * TILE_COLS..];
            let c = j % TILE_COLS;
            for (l, v) in row.iter_mut().enumerate() {
                *v = from_bf16(panel[(l / 2) * 2 * TILE_COLS + 2 * c + l % 2]);
            }
        }
        w
    }

    /// Refills `self` from `x [k, n]` with rows `ld` apart (a convolution's input, unfolded
    /// or not: reduction steps by rows), reusing its buffer.
    pub fn fill_from_columns(&mut self, x: &[f32], k: usize, n: usize, ld: usize) {
        assert!(
            ld >= n && (k == 0 || x.len() >= (k - 1) * ld + n),
            "bf16 panels: {} values for {k} x {n} with rows {ld} apart",
            x.len()
        );
        let kp = k.div_ceil(2);
        self.data.clear();
        self.data
            .resize(n.div_ceil(TILE_COLS) * kp * 2 * TILE_COLS, 0);
        (self.k, self.n, self.kp) = (k, n, kp);
        vectorized(
            #[inline(always)]
            || {
                for p in 0..kp {
                    let even = &x[2 * p * ld..][..n];
                    let odd = (2 * p + 1 < k).then(|| &x[(2 * p + 1) * ld..][..n]);
                    for (q, panel) in self.data.chunks_exact_mut(kp * 2 * TILE_COLS).enumerate() {
                        let c0 = q * TILE_COLS;
                        let cols = TILE_COLS.min(n - c0);
                        let step = &mut panel[p * 2 * TILE_COLS..][..2 * cols];
                        for (c, pair) in step.chunks_exact_mut(2).enumerate() {
                            pair[0] = to_bf16(even[c0 + c]);
                            pair[1] = odd.map_or(0, |o| to_bf16(o[c0 + c]));
                        }
                    }
                }
            },
        )
    }

    fn sized(k: usize, n: usize) -> Self {
        let kp = k.div_ceil(2);
        Self {
            data: vec![0u16; n.div_ceil(TILE_COLS) * kp * 2 * TILE_COLS],
            k,
            n,
            kp,
        }
    }
}

/// Where a tile of [`product`] lands: rows `i0..i0 + rows` and columns `c0..c0 + cols` of
/// the result (the rest of the tile is padding).
#[derive(Clone, Copy, Debug)]
pub struct TileAt {
    pub i0: usize,
    pub rows: usize,
    pub c0: usize,
    pub cols: usize,
}

/// Copies the part of `tile` inside the result into the row-major matrix at `dst` (rows `ld`
/// apart).
///
/// # Safety
/// `dst` must hold rows `at.i0..at.i0 + at.rows` of `ld` values, columns `at.c0..at.c0 +
/// at.cols` written by no one else meanwhile.
#[inline(always)]
pub unsafe fn store(at: TileAt, tile: &Tile, dst: *mut f32, ld: usize) {
    for (i, acc) in tile.iter().enumerate().take(at.rows) {
        // SAFETY: the caller's bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.add((at.i0 + i) * ld + at.c0), at.cols)
        }
    }
}

/// `a [m, k] @ b [k, n]` in bf16 with f32 sums, handing each finished tile to `write`
/// (called inside [`vectorized`], so its loops vectorise). Blocks of rows go over rayon's
/// threads when `parallel`.
pub fn product(a: &Rows, b: &Panels, parallel: bool, write: impl Fn(TileAt, &Tile) + Sync) {
    assert_eq!(a.k, b.k, "bf16 product: reduction lengths differ");
    let (m, n, kp) = (a.m, b.n, a.kp);
    if m == 0 || n == 0 {
        return;
    }
    let native = has_native();
    let panel_len = kp * 2 * TILE_COLS;
    let (blocks, panels) = (m.div_ceil(BLOCK_ROWS), n.div_ceil(TILE_COLS));
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // Few blocks of rows (a handful of tokens, a narrow layer): the panels are shared out too,
    // so that every thread has work.
    let groups = if blocks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(blocks).min(panels)
    };
    let per_group = panels.div_ceil(groups);
    let task = |t: usize| {
        let (blk, g) = (t / groups, t % groups);
        let r0 = blk * BLOCK_ROWS;
        let end = (r0 + BLOCK_ROWS).min(m);
        vectorized(
            #[inline(always)]
            || {
                for q in g * per_group..((g + 1) * per_group).min(panels) {
                    // (empty when `k` is 0: the tiles are then zeros)
                    let panel = &b.data[q * panel_len..][..panel_len];
                    for i0 in (r0..end).step_by(TILE_ROWS) {
                        let rows = &a.data[i0 * 2 * kp..][..TILE_ROWS * 2 * kp];
                        let tile = one_tile(native, kp, rows, panel);
                        let c0 = q * TILE_COLS;
                        let at = TileAt {
                            i0,
                            rows: TILE_ROWS.min(m - i0),
                            c0,
                            cols: TILE_COLS.min(n - c0),
                        };
                        write(at, &tile);
                    }
                }
            },
        )
    };
    let tasks = blocks * groups;
    if threads > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// One tile on the native kernel when `native` (the caller checked [`has_native`]), else the
/// portable one; `a` holds [`TILE_ROWS`] rows of `kp` pairs, `b` `kp` steps of
/// [`TILE_COLS`] pairs.
#[inline(always)]
fn one_tile(native: bool, kp: usize, a: &[u16], b: &[u16]) -> Tile {
    assert!(a.len() >= TILE_ROWS * 2 * kp && b.len() >= kp * 2 * TILE_COLS);
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: the CPU has AVX-512F and AVX512_BF16 (`has_native`); the bounds are
        // asserted above.
        return unsafe { native_tile(kp, a.as_ptr(), b.as_ptr()) };
    }
    let _ = native;
    portable_tile(kp, a, b)
}

/// A tile as `vdpbf16ps` computes it, in plain Rust: for each pair, the odd step's product
/// added first, then the even one's (each product exact in f32). Three rows at a time, so
/// that the sums fit AVX2's registers.
#[inline(always)]
fn portable_tile(kp: usize, a: &[u16], b: &[u16]) -> Tile {
    let mut tile = [[0.0f32; TILE_COLS]; TILE_ROWS];
    for r in (0..TILE_ROWS).step_by(3) {
        let mut acc = [[0.0f32; TILE_COLS]; 3];
        for p in 0..kp {
            let step = &b[p * 2 * TILE_COLS..][..2 * TILE_COLS];
            let (mut even, mut odd) = ([0.0f32; TILE_COLS], [0.0f32; TILE_COLS]);
            for (c, pair) in step.chunks_exact(2).enumerate() {
                even[c] = from_bf16(pair[0]);
                odd[c] = from_bf16(pair[1]);
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = &a[(r + i) * 2 * kp + 2 * p..][..2];
                let (x0, x1) = (from_bf16(x[0]), from_bf16(x[1]));
                for c in 0..TILE_COLS {
                    acc[c] += x1 * odd[c];
                    acc[c] += x0 * even[c];
                }
            }
        }
        tile[r..r + 3].copy_from_slice(&acc);
    }
    tile
}

/// A tile on AVX512_BF16: 12 rows x 32 columns of sums in 24 zmm registers, each step one
/// broadcast pair of the left operand per row against two registers of the right.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512_BF16; `a` must hold [`TILE_ROWS`] rows of `2 * kp`
/// values, `b` `kp` steps of `2 * TILE_COLS`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn native_tile(kp: usize, a: *const u16, b: *const u16) -> Tile {
    use std::arch::x86_64::*;
    let mut c = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
    for p in 0..kp {
        // SAFETY: step `p` of `b` and pair `p` of each row of `a` are within the caller's
        // bounds; __m512i and __m512bh are the same 64 bytes.
        unsafe {
            let step = b.add(p * 2 * TILE_COLS);
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(step.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(step.add(TILE_COLS).cast()));
            for (i, ci) in c.iter_mut().enumerate() {
                let pair = a.add(i * 2 * kp + 2 * p).cast::<i32>().read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                ci[0] = _mm512_dpbf16_ps(ci[0], x, b0);
                ci[1] = _mm512_dpbf16_ps(ci[1], x, b1);
            }
        }
    }
    let mut tile = [[0.0f32; TILE_COLS]; TILE_ROWS];
    for (row, ci) in tile.iter_mut().zip(&c) {
        // SAFETY: each row holds 32 floats.
        unsafe {
            _mm512_storeu_ps(row.as_mut_ptr(), ci[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), ci[1]);
        }
    }
    tile
}

/// Whether this CPU runs [`product`]'s tiles on AVX512_BF16: it has the instruction, and
/// the native kernel agreed with the portable one on a test product at first use (else a
/// warning says so and the portable kernel runs).
pub fn has_native() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            let ok = native_agrees();
            if !ok {
                eprintln!(
                    "warning: this CPU's AVX512_BF16 kernel disagreed with the portable bf16 \
                     kernel on a test product, so it is not used (bf16 is then no faster \
                     than f32)"
                );
            }
            return ok;
        }
        false
    })
}

/// The native and the portable kernel on one tile of a 75-step product (an odd length, so
/// with padding) of values that bf16 holds exactly, within 1e-5 of each other.
#[cfg(target_arch = "x86_64")]
fn native_agrees() -> bool {
    let (m, k, n) = (TILE_ROWS, 75, TILE_COLS);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 5 % 19) as f32 - 9.0) / 4.0)
        .collect();
    let (a, b) = (Rows::new(&x, m, k), Panels::from_rows(&w, n, k));
    // SAFETY: the caller checked the CPU; both operands hold one whole tile.
    let native = unsafe { native_tile(a.kp, a.data.as_ptr(), b.data.as_ptr()) };
    let portable = portable_tile(a.kp, &a.data, &b.data);
    native
        .iter()
        .flatten()
        .zip(portable.iter().flatten())
        .all(|(p, q)| (p - q).abs() <= 1e-5 * q.abs().max(1.0))
}

/// `act(x [m, k] @ w^T + bias)` in bf16, `w` a dense layer's weight packed by
/// [`Panels::from_rows`] and `bias` `[n]` (or empty): [`matmul::linear_act`]'s bf16 form.
///
/// [`matmul::linear_act`]: super::matmul::linear_act
pub fn linear_act(x: &[f32], m: usize, w: &Panels, bias: &[f32], act: Activation) -> Vec<f32> {
    // SAFETY: `Write` sets every one of the `m * n` values.
    unsafe {
        written(m * w.n, |dst| {
            linear_raw(x, m, w, bias, Epilogue::Write(act), dst)
        })
    }
}

/// `out [m, n] += x [m, k] @ w^T + bias` in bf16 (see [`linear_act`]).
pub fn linear_add(x: &[f32], m: usize, w: &Panels, bias: &[f32], out: &mut [f32]) {
    assert!(out.len() >= m * w.n, "bf16 dense layer: output size");
    // SAFETY: `out` holds the `m * n` values read and written.
    unsafe { linear_raw(x, m, w, bias, Epilogue::Add, out.as_mut_ptr()) }
}

/// The bf16 dense layers' kernel: `x` converted to [`Rows`], each tile of the product
/// finished by `epilogue` as it is handed over.
///
/// # Safety
/// `dst` must point to `m * n` floats, initialised for [`Epilogue::Add`], aliasing `x`
/// nowhere.
unsafe fn linear_raw(
    x: &[f32],
    m: usize,
    w: &Panels,
    bias: &[f32],
    epilogue: Epilogue,
    dst: *mut f32,
) {
    let n = w.n;
    assert!(
        bias.is_empty() || bias.len() == n,
        "bf16 dense layer: bias size"
    );
    let zeros = vec![0.0f32; if bias.is_empty() { n } else { 0 }];
    let bias = if bias.is_empty() { &zeros[..] } else { bias };
    let dst = SendPtr(dst);
    let parallel = rayon::current_thread_index().is_none();
    product(&Rows::new(x, m, w.k), w, parallel, |at, tile| {
        for (i, acc) in tile.iter().enumerate().take(at.rows) {
            // SAFETY: row `at.i0 + i < m`, columns `at.c0..at.c0 + at.cols <= n`: this
            // tile's part of the output, which no other tile writes.
            let out = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add((at.i0 + i) * n + at.c0), at.cols)
            };
            epilogue.finish(out, acc, &bias[at.c0..]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(round(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1
        assert_eq!(round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round(-1.0 - 1.0 / 512.0), -1.0);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(f32::INFINITY), f32::INFINITY);
        assert_eq!(round(f32::MAX), f32::INFINITY);
        for x in [0.1f32, -3.7, 1e-20, 12345.678] {
            assert!((round(x) - x).abs() <= x.abs() / 256.0, "{x}");
        }
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().is_err());
    }

    /// The bf16 dense layer against a naive loop over the bf16-rounded operands: tiles cut
    /// at partial row panels, partial column panels and an odd reduction length, each
    /// epilogue.
    #[test]
    fn dense_layer_matches_the_rounded_operands() {
        for (m, k, n) in [(100, 19, 37), (7, 64, 40), (49, 1, 3), (5, 0, 33)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let panels = Panels::from_rows(&w, n, k);
            let y = linear_act(&x, m, &panels, &b, Activation::Relu);
            let mut added = vec![1.0f32; m * n];
            linear_add(&x, m, &panels, &b, &mut added);
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k)
                        .map(|l| round(x[i * k + l]) * round(w[j * k + l]))
                        .sum();
                    let want = dot + b[j];
                    let tol = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (y[i * n + j] - want.max(0.0)).abs() < tol,
                        "({i}, {j}): {} against {want}",
                        y[i * n + j]
                    );
                    assert!(
                        (added[i * n + j] - 1.0 - want).abs() < tol,
                        "({i}, {j}) added"
                    );
                }
            }
        }
    }

    /// Columns packed from a `[k, n]` matrix give the same product as from its transpose.
    #[test]
    fn column_and_row_packing_agree() {
        let (m, k, n) = (13, 27, 70);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.21).sin()).collect();
        let wt: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.07).cos()).collect();
        let w = crate::ops::layout::transpose(&wt, k, n);
        let mut by_columns = Panels::default();
        by_columns.fill_from_columns(&wt, k, n, n);
        let by_rows = Panels::from_rows(&w, n, k);
        assert_eq!(by_columns.data, by_rows.data);
        let rounded: Vec<f32> = w.iter().map(|&v| round(v)).collect();
        assert_eq!(by_rows.to_rows(), rounded);
        let a = Rows::new(&x, m, k);
        let seen = std::sync::Mutex::new(0usize);
        product(&a, &by_rows, true, |at, _| {
            *seen.lock().unwrap() += at.rows * at.cols;
        });
        assert_eq!(
            *seen.lock().unwrap(),
            m * n,
            "every element in exactly one tile"
        );
    }

    #[test]
    fn the_native_kernel_agrees_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            assert!(native_agrees());
            assert!(has_native());
            return;
        }
        assert!(!has_native(), "no AVX512_BF16, so the portable kernel");
        assert_eq!(Precision::Bf16.on_this_cpu().0, Precision::F32);
    }
}
