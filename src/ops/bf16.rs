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

/// `a [m, k] @ b [k, n]` in bf16 with f32 sums, handing each finished tile to `write`.
/// Blocks of rows go over rayon's threads when `parallel`. `write` is a closure of its own,
/// compiled for the baseline CPU unless inlined: arithmetic in it goes inside [`vectorized`]
/// (without, GELU's `mul_add`s call libm's software `fmaf`, 12 ns per value).
pub fn product(a: &Rows, b: &Panels, parallel: bool, write: impl Fn(TileAt, &Tile) + Sync) {
    assert_eq!(a.k, b.k, "bf16 product: reduction lengths differ");
    let (m, n, kp) = (a.m, b.n, a.kp);
    if m == 0 || n == 0 {
        return;
    }
    let native = has_native();
    let panel_len = kp * 2 * TILE_COLS;
    let steps = Steps::panel(kp);
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
                        let tile = one_tile(native, steps, rows, panel);
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

/// Where the right operand's reduction steps of a tile lie: step `g * kp + p` (pair `p` of
/// group `g`) starts `offsets[g] + p * stride` values after the tile's first column, and holds
/// [`TILE_COLS`] pairs. A panel of [`Panels`] is one group of steps `2 * TILE_COLS` apart; a
/// stride-1 convolution ([`conv`]) has a group per kernel tap, the input's pair planes apart.
#[derive(Clone, Copy, Debug)]
struct Steps<'a> {
    offsets: &'a [usize],
    kp: usize,
    stride: usize,
}

impl Steps<'_> {
    /// The steps of one [`Panels`] panel of `kp` pairs.
    fn panel(kp: usize) -> Steps<'static> {
        Steps {
            offsets: &[0],
            kp,
            stride: 2 * TILE_COLS,
        }
    }

    /// Pairs per row of the left operand.
    fn pairs(&self) -> usize {
        self.offsets.len() * self.kp
    }

    /// One past the last value a tile starting at the operand's start reads.
    fn span(&self) -> usize {
        match self.offsets.iter().max() {
            Some(&o) if self.kp > 0 => o + (self.kp - 1) * self.stride + 2 * TILE_COLS,
            _ => 0,
        }
    }
}

/// One tile on the native kernel when `native` (the caller checked [`has_native`]), else the
/// portable one; `a` holds [`TILE_ROWS`] rows of `steps.pairs()` pairs, `b` the steps.
#[inline(always)]
fn one_tile(native: bool, steps: Steps, a: &[u16], b: &[u16]) -> Tile {
    assert!(a.len() >= TILE_ROWS * 2 * steps.pairs() && b.len() >= steps.span());
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: the CPU has AVX-512F and AVX512_BF16 (`has_native`); the bounds are
        // asserted above.
        return unsafe { native_tile(steps, a.as_ptr(), b.as_ptr()) };
    }
    let _ = native;
    portable_tile(steps, a, b)
}

/// A tile as `vdpbf16ps` computes it, in plain Rust: for each pair, the odd step's product
/// added first, then the even one's (each product exact in f32). Three rows at a time, so
/// that the sums fit AVX2's registers.
#[inline(always)]
fn portable_tile(steps: Steps, a: &[u16], b: &[u16]) -> Tile {
    let row = 2 * steps.pairs();
    let mut tile = [[0.0f32; TILE_COLS]; TILE_ROWS];
    for r in (0..TILE_ROWS).step_by(3) {
        let mut acc = [[0.0f32; TILE_COLS]; 3];
        for (g, &off) in steps.offsets.iter().enumerate() {
            for p in 0..steps.kp {
                let step = &b[off + p * steps.stride..][..2 * TILE_COLS];
                let (mut even, mut odd) = ([0.0f32; TILE_COLS], [0.0f32; TILE_COLS]);
                for (c, pair) in step.chunks_exact(2).enumerate() {
                    even[c] = from_bf16(pair[0]);
                    odd[c] = from_bf16(pair[1]);
                }
                let at = 2 * (g * steps.kp + p);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = &a[(r + i) * row + at..][..2];
                    let (x0, x1) = (from_bf16(x[0]), from_bf16(x[1]));
                    for c in 0..TILE_COLS {
                        acc[c] += x1 * odd[c];
                        acc[c] += x0 * even[c];
                    }
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
/// The CPU must have AVX-512F and AVX512_BF16; `a` must hold [`TILE_ROWS`] rows of
/// `steps.pairs()` pairs, `b` at least `steps.span()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn native_tile(steps: Steps, a: *const u16, b: *const u16) -> Tile {
    use std::arch::x86_64::*;
    let row = 2 * steps.pairs();
    let mut c = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
    for (g, &off) in steps.offsets.iter().enumerate() {
        for p in 0..steps.kp {
            // SAFETY: step `g * kp + p` of `b` and that pair of each row of `a` are within the
            // caller's bounds; __m512i and __m512bh are the same 64 bytes.
            unsafe {
                let step = b.add(off + p * steps.stride);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(step.cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(step.add(TILE_COLS).cast()));
                let at = a.add(2 * (g * steps.kp + p));
                for (i, ci) in c.iter_mut().enumerate() {
                    let pair = at.add(i * row).cast::<i32>().read_unaligned();
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    ci[0] = _mm512_dpbf16_ps(ci[0], x, b0);
                    ci[1] = _mm512_dpbf16_ps(ci[1], x, b1);
                }
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
    let steps = Steps::panel(a.kp);
    // SAFETY: the caller checked the CPU; both operands hold one whole tile.
    let native = unsafe { native_tile(steps, a.data.as_ptr(), b.data.as_ptr()) };
    let portable = portable_tile(steps, &a.data, &b.data);
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
        vectorized(
            #[inline(always)]
            || {
                for (i, acc) in tile.iter().enumerate().take(at.rows) {
                    // SAFETY: row `at.i0 + i < m`, columns `at.c0..at.c0 + at.cols <= n`:
                    // this tile's part of the output, which no other tile writes.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.get().add((at.i0 + i) * n + at.c0),
                            at.cols,
                        )
                    };
                    epilogue.finish(out, acc, &bias[at.c0..]);
                }
            },
        )
    });
}

/// `a [m, k] @ b [k, n]` in bf16 with f32 sums, `b` row-major f32 (converted as it is
/// packed), the rows of the result over rayon's threads.
pub fn matmul(a: &Rows, b: &[f32], n: usize) -> Vec<f32> {
    let (m, k) = (a.m, a.k);
    let mut panels = Panels::default();
    panels.fill_from_columns(b, k, n, n);
    let parallel = rayon::current_thread_index().is_none();
    // SAFETY: the tiles cover every one of the `m * n` values.
    unsafe {
        written(m * n, |dst| {
            let dst = SendPtr(dst);
            product(a, &panels, parallel, |at, tile| {
                store(at, tile, dst.get(), n)
            })
        })
    }
}

/// A stride-1 `k x k` convolution's weights for [`conv`]: each output channel's row holds, tap
/// by tap, the input channels in pairs (an odd count padded with a zero channel), as bf16.
#[derive(Clone, Debug)]
pub struct ConvRows {
    rows: Rows,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
}

impl ConvRows {
    /// From `w [cout, cin, k, k]` (PyTorch's layout).
    pub fn new(w: &[f32], cout: usize, cin: usize, k: usize) -> Self {
        assert_eq!(w.len(), cout * cin * k * k, "bf16 convolution weight size");
        let (kk, cp) = (k * k, cin.div_ceil(2));
        let mut by_tap = vec![0.0f32; cout * kk * 2 * cp];
        for co in 0..cout {
            for ci in 0..cin {
                for t in 0..kk {
                    by_tap[(co * kk + t) * 2 * cp + ci] = w[(co * cin + ci) * kk + t];
                }
            }
        }
        Self {
            rows: Rows::new(&by_tap, cout, kk * 2 * cp),
            cin,
            cout,
            k,
        }
    }
}

/// Bytes of weights per task of [`conv`], re-read from L2 for each tile of positions: as many
/// output channels as fit (whole tiles, at least one, at most eight), so that narrow layers
/// read their input once.
const CONV_BLOCK_BYTES: usize = 256 << 10;

/// `act(conv(x) + bias)` for a stride-1 convolution with `pad` zeros around `x [cin, h, w]`,
/// into `out [cout, ho, wo]`, in bf16 with f32 sums and nothing unfolded: the input is
/// converted once into planes of channel pairs on the padded grid (`[cin / 2][h + 2 pad][w +
/// 2 pad][2]`), where the `k * k` taps of a run of [`TILE_COLS`] consecutive grid positions
/// are [`TILE_COLS`] consecutive pairs, so every step of the product reads its operand where
/// it lies. The product runs over the padded grid's columns: the `k - 1` columns of each row
/// past the output's width are computed and dropped (1% of a 256-wide map, 11% of a 16-wide
/// one).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    wts: &ConvRows,
    bias: &[f32],
    x: &[f32],
    h: usize,
    w: usize,
    pad: usize,
    act: Activation,
    out: &mut [f32],
) {
    let (cin, cout, k) = (wts.cin, wts.cout, wts.k);
    assert_eq!(x.len(), cin * h * w, "bf16 convolution input size");
    assert_eq!(bias.len(), cout, "bf16 convolution bias size");
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    assert!(
        hp >= k && wp >= k,
        "bf16 convolution: input {h}x{w} smaller than the kernel"
    );
    let (ho, wo) = (hp - k + 1, wp - k + 1);
    assert_eq!(out.len(), cout * ho * wo, "bf16 convolution output size");
    let cp = cin.div_ceil(2);
    if cout == 0 || ho * wo == 0 {
        return;
    }
    // The input's pair planes, with room for the dropped columns of the last tile to read.
    let plane = 2 * hp * wp;
    let mut packed = vec![0u16; cp * plane + 2 * (TILE_COLS + k * wp)];
    let fill = |(p, dst): (usize, &mut [u16])| {
        if p >= cp {
            return;
        }
        let even = &x[2 * p * h * w..][..h * w];
        let odd = (2 * p + 1 < cin).then(|| &x[(2 * p + 1) * h * w..][..h * w]);
        vectorized(
            #[inline(always)]
            || {
                for y in 0..h {
                    let row = &mut dst[2 * ((y + pad) * wp + pad)..][..2 * w];
                    let e = &even[y * w..][..w];
                    match odd {
                        Some(o) => {
                            let o = &o[y * w..][..w];
                            for ((pair, &a), &b) in row.chunks_exact_mut(2).zip(e).zip(o) {
                                pair[0] = to_bf16(a);
                                pair[1] = to_bf16(b);
                            }
                        }
                        None => {
                            for (pair, &a) in row.chunks_exact_mut(2).zip(e) {
                                pair[0] = to_bf16(a);
                            }
                        }
                    }
                }
            },
        )
    };
    let parallel = rayon::current_thread_index().is_none();
    if parallel && cin * h * w >= 1 << 16 {
        packed.par_chunks_mut(plane).enumerate().for_each(fill);
    } else {
        packed.chunks_mut(plane).enumerate().for_each(fill);
    }
    let offsets: Vec<usize> = (0..k * k).map(|t| 2 * ((t / k) * wp + t % k)).collect();
    let steps = Steps {
        offsets: &offsets,
        kp: cp,
        stride: plane,
    };
    let row = 2 * steps.pairs();
    let cols = ho * wp;
    let col_tiles = cols.div_ceil(TILE_COLS);
    assert!(
        2 * (col_tiles - 1) * TILE_COLS + steps.span() <= packed.len(),
        "bf16 convolution: packed input bounds"
    );
    let block_rows = (CONV_BLOCK_BYTES / (2 * row)).clamp(1, 8) * TILE_ROWS;
    let blocks = cout.div_ceil(block_rows);
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // Enough tasks to keep every thread busy to the end, each a run of tiles of positions.
    let groups = (8 * threads).div_ceil(blocks).clamp(1, col_tiles);
    let per_group = col_tiles.div_ceil(groups);
    let native = has_native();
    let dst = SendPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (blk, g) = (t % blocks, t / blocks);
        let r0 = blk * block_rows;
        let end = (r0 + block_rows).min(cout);
        vectorized(
            #[inline(always)]
            || {
                for q in g * per_group..((g + 1) * per_group).min(col_tiles) {
                    let c0 = q * TILE_COLS;
                    let b = &packed[2 * c0..];
                    for i0 in (r0..end).step_by(TILE_ROWS) {
                        let a = &wts.rows.data[i0 * row..][..TILE_ROWS * row];
                        let tile = one_tile(native, steps, a, b);
                        for (i, acc) in tile.iter().enumerate().take(end - i0) {
                            let co = i0 + i;
                            let bias = bias[co];
                            // Runs of the tile within one row of the grid, the dropped
                            // columns left out.
                            let mut j = 0;
                            while j < TILE_COLS && c0 + j < cols {
                                let (y, xx) = ((c0 + j) / wp, (c0 + j) % wp);
                                let run = (wp - xx).min(TILE_COLS - j);
                                let keep = wo.saturating_sub(xx).min(run);
                                if keep > 0 {
                                    // SAFETY: channel `co`, row `y`, columns `xx..xx + keep`
                                    // of the output: this tile's, written by no other.
                                    let o = unsafe {
                                        std::slice::from_raw_parts_mut(
                                            dst.get().add((co * ho + y) * wo + xx),
                                            keep,
                                        )
                                    };
                                    act.write_row(o, &acc[j..j + keep], bias);
                                }
                                j += run;
                            }
                        }
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

    /// The direct bf16 convolution against a naive loop over the bf16-rounded operands: odd
    /// channel counts (a zero channel pads the last pair), no padding and wide rows (tiles
    /// across rows of the grid), a 5x5 kernel, a map smaller than a tile, each epilogue.
    #[test]
    fn direct_convolution_matches_the_rounded_operands() {
        for (cin, cout, k, pad, h, w, act) in [
            (5, 14, 3, 1, 7, 9, Activation::Relu),
            (16, 30, 3, 0, 6, 40, Activation::None),
            (4, 13, 5, 2, 11, 5, Activation::Gelu),
            (33, 25, 3, 1, 1, 2, Activation::Relu),
            (2, 1, 1, 0, 3, 3, Activation::None),
        ] {
            let x: Vec<f32> = (0..cin * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let wt: Vec<f32> = (0..cout * cin * k * k)
                .map(|i| (i as f32 * 0.11).cos())
                .collect();
            let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.25 - 1.0).collect();
            let (ho, wo) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
            let mut out = vec![f32::NAN; cout * ho * wo];
            conv(
                &ConvRows::new(&wt, cout, cin, k),
                &b,
                &x,
                h,
                w,
                pad,
                act,
                &mut out,
            );
            for co in 0..cout {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut want = b[co];
                        for ci in 0..cin {
                            for t in 0..k * k {
                                let (sy, sx) = (y + t / k, xx + t % k);
                                if sy < pad || sx < pad || sy - pad >= h || sx - pad >= w {
                                    continue;
                                }
                                let v = x[(ci * h + sy - pad) * w + sx - pad];
                                want += round(v) * round(wt[(co * cin + ci) * k * k + t]);
                            }
                        }
                        let want = act.of(want);
                        let got = out[(co * ho + y) * wo + xx];
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{cin}->{cout} k{k} pad{pad} {h}x{w}: ({co}, {y}, {xx}) {got} against {want}"
                        );
                    }
                }
            }
        }
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
