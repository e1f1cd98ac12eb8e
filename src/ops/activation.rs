//! Element-wise activations: ReLU, GELU (exact, through a vectorisable erf, and the tanh
//! approximation), sigmoid, and the branch-free `exp` that softmax uses. Large buffers are
//! processed in parallel chunks.

use super::simd::vectorized;
use rayon::prelude::*;

/// The non-linearity fused after a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Exact GELU, `x * Phi(x)` (PyTorch's `nn.GELU()`).
    Gelu,
    /// GELU's tanh approximation (`nn.GELU(approximate="tanh")`).
    GeluTanh,
    Sigmoid,
}

impl Activation {
    /// Applies the activation in place.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Sigmoid => sigmoid(x),
        }
    }

    /// The activation of one value, for kernels that apply it as they write a tile (inline
    /// it into a [`vectorized`] loop: ReLU and GELU vectorise, the others call libm).
    #[inline(always)]
    pub fn of(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Gelu => 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                let u = C * (v + 0.044_715 * v * v * v);
                0.5 * v * (1.0 + u.tanh())
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        }
    }

    /// `out[j] = act(acc[j] + bias)` for `j < out.len()`: a row of a finished tile. Call it
    /// inside [`vectorized`]; each activation is its own loop, with no closure between the
    /// loop and [`of`](Self::of) (one left out of line would compile GELU's `mul_add`s
    /// without FMA, as calls to libm's software `fmaf`).
    #[inline(always)]
    pub fn write_row(self, out: &mut [f32], acc: &[f32], bias: f32) {
        let n = out.len().min(acc.len());
        let (out, acc) = (&mut out[..n], &acc[..n]);
        match self {
            Activation::None => {
                for (y, &a) in out.iter_mut().zip(acc) {
                    *y = a + bias;
                }
            }
            Activation::Relu => {
                for (y, &a) in out.iter_mut().zip(acc) {
                    *y = (a + bias).max(0.0);
                }
            }
            Activation::Gelu => {
                for (y, &a) in out.iter_mut().zip(acc) {
                    *y = Activation::Gelu.of(a + bias);
                }
            }
            act => {
                for (y, &a) in out.iter_mut().zip(acc) {
                    *y = act.of(a + bias);
                }
            }
        }
    }
}

/// Runs `f` on every value, in parallel chunks when the buffer is large and the caller is not
/// already on one of rayon's workers.
fn each(x: &mut [f32], f: impl Fn(&mut f32) + Sync + Send + Copy) {
    let run = |c: &mut [f32]| {
        vectorized(
            #[inline(always)]
            || c.iter_mut().for_each(f),
        )
    };
    if x.len() >= 1 << 16 && rayon::current_thread_index().is_none() {
        x.par_chunks_mut(1 << 14).for_each(run);
    } else {
        run(x);
    }
}

pub fn relu(x: &mut [f32]) {
    each(x, |v| *v = Activation::Relu.of(*v));
}

/// Exact GELU, `x * Phi(x)` (PyTorch's default), in place.
pub fn gelu(x: &mut [f32]) {
    each(x, |v| *v = Activation::Gelu.of(*v));
}

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in place.
pub fn gelu_tanh(x: &mut [f32]) {
    each(x, |v| *v = Activation::GeluTanh.of(*v));
}

/// `1 / (1 + exp(-x))`, in place.
pub fn sigmoid(x: &mut [f32]) {
    each(x, |v| *v = Activation::Sigmoid.of(*v));
}

/// `exp(x)` for `x <= 0` (softmax after subtracting the row maximum), Cephes' single-precision
/// polynomial after the reduction `x = n ln 2 + r`, written without branches or libm calls so
/// that loops over it vectorise; relative error about 1e-7.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E;
    // round to nearest with the 1.5 * 2^23 trick (vectorises without SSE4.1's roundps)
    let z = t + 12_582_912.0;
    let n = z - 12_582_912.0;
    // the reduction and the last step in fused multiply-adds too (0.52 -> 0.42 ns per value
    // on this project's AVX2 machine, same accuracy)
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    // `n` as an integer: the low mantissa bits of `z` (exact for |n| < 2^22), without the
    // saturating float-to-int conversion that keeps the loop scalar.
    let ni = (z.to_bits() as i32).wrapping_sub(0x4B40_0000);
    y * f32::from_bits(((ni + 127) as u32) << 23)
}

/// erf in f32 by a rational approximation on [-4, 4] (odd numerator of degree 13, even
/// denominator of degree 8; the form Eigen and XLA use), within 5e-7 of the true value.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_600_1e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    p *= x;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329_2e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    p / q
}

#[cfg(test)]
fn libm_erf(x: f64) -> f64 {
    // erf via the complementary error function's continued fraction for large |x| and a Taylor
    // series for small |x|; both converge to double precision in the ranges used.
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Taylor series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc (Lentz), then 1 - erfc.
        let x2 = ax * ax;
        let mut f = ax;
        let tiny = 1e-300;
        let mut c = f;
        let mut d = 0.0;
        for i in 1..200 {
            let a = i as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (a, b) = (super::exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert!(super::exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn fast_erf_is_accurate() {
        let mut worst = 0.0f64;
        for i in -60000..=60000 {
            let x = i as f32 * 1e-4;
            let e = (super::erf(x) as f64 - super::libm_erf(x as f64)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 5e-7, "max erf error {worst:e}");
    }

    #[test]
    fn erf_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!(
                (super::libm_erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} vs {want}",
                super::libm_erf(x)
            );
        }
    }
}
