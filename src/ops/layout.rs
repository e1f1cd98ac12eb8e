//! Moving values between layouts: transposes, column slices, and element-wise helpers on plain
//! row-major buffers.

/// `[rows, cols]` -> `[cols, rows]`, in cache-sized blocks.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    t[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    t
}

/// Columns `offset..offset + width` of each of `rows` rows of `stride` values, packed: one
/// attention head's slice of a projection.
pub fn columns(m: &[f32], rows: usize, stride: usize, offset: usize, width: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * width);
    for r in 0..rows {
        v.extend_from_slice(&m[r * stride + offset..r * stride + offset + width]);
    }
    v
}

/// Writes packed `[rows, width]` values into columns `offset..offset + width` of `m`.
pub fn put_columns(m: &mut [f32], src: &[f32], rows: usize, stride: usize, offset: usize) {
    let width = src.len() / rows.max(1);
    for r in 0..rows {
        m[r * stride + offset..r * stride + offset + width]
            .copy_from_slice(&src[r * width..(r + 1) * width]);
    }
}

/// `a + b`, element-wise.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let n = a.len().min(b.len());
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let run = |o: &mut [std::mem::MaybeUninit<f32>], a: &[f32], b: &[f32]| {
        for ((o, x), y) in o.iter_mut().zip(a).zip(b) {
            o.write(x + y);
        }
    };
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= 1 << 17 && rayon::current_thread_index().is_none() {
        spare
            .par_chunks_mut(CHUNK)
            .zip(a[..n].par_chunks(CHUNK).zip(b[..n].par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| run(o, a, b));
    } else {
        run(spare, &a[..n], &b[..n]);
    }
    // SAFETY: the loops above wrote all `n` values.
    unsafe { out.set_len(n) };
    out
}

/// `a += b`, element-wise (in parallel chunks when large and the caller is not already on one
/// of rayon's workers).
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let run = |a: &mut [f32], b: &[f32]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    if a.len() >= 1 << 17 && rayon::current_thread_index().is_none() {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| run(a, b));
    } else {
        run(a, b);
    }
}

/// A dot product with eight independent accumulators (vectorises without fast-math; inlined
/// so that it takes the vector width of a [`vectorized`](super::simd::vectorized) caller).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Adds `bias` to each of the rows of a `[rows, bias.len()]` buffer.
pub fn add_row_bias(x: &mut [f32], bias: &[f32]) {
    use rayon::prelude::*;
    let n = bias.len();
    let add = |r: &mut [f32]| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    if x.len() >= 1 << 16 && rayon::current_thread_index().is_none() {
        x.par_chunks_mut(n * 64)
            .for_each(|c| c.chunks_mut(n).for_each(add));
    } else {
        x.chunks_mut(n).for_each(add);
    }
}

/// The sum of `f(v)` over `p`: eight f32 lanes per block of 4096 values, the blocks added in
/// f64, so that sums over millions of values (batch statistics, gradients) stay accurate.
#[inline]
pub fn sum_mapped(p: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in p.chunks(4096) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += f(v);
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>()
            + it.remainder().iter().map(|&v| f(v) as f64).sum::<f64>();
    }
    total
}
