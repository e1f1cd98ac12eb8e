//! Turning decoded images into network input: per-channel normalisation, padding to a multiple
//! of the network stride, and batching into NCHW buffers.

use super::image_io::Picture;
use serde::{Deserialize, Serialize};

/// `x' = (x - mean) / std` per channel, on pixels already scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Normalize {
    /// torchvision's ImageNet statistics.
    fn default() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }
}

impl Normalize {
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> anyhow::Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            anyhow::bail!(
                "--mean and --std need the same number of values (got {} and {})",
                mean.len(),
                std.len()
            );
        }
        if let Some(s) = std.iter().find(|s| **s <= 0.0 || !s.is_finite()) {
            anyhow::bail!("--std values must be positive, got {s}");
        }
        Ok(Self { mean, std })
    }

    /// No change: mean 0, std 1 on each of `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Mean and std of channel `c` (a grayscale image uses the first value).
    pub fn channel(&self, c: usize) -> (f32, f32) {
        let i = c.min(self.mean.len() - 1);
        (self.mean[i], self.std[i])
    }

    /// CHW buffer of the normalised picture.
    pub fn to_chw(&self, pic: &Picture) -> Vec<f32> {
        let n = pic.width * pic.height;
        let mut out = vec![0.0; n * pic.channels];
        for c in 0..pic.channels {
            let (m, s) = self.channel(c);
            let inv = 1.0 / s;
            for i in 0..n {
                out[c * n + i] = (pic.data[i * pic.channels + c] - m) * inv;
            }
        }
        out
    }
}

/// Rounds `v` up to a multiple of `m`.
pub fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

/// Pads a CHW buffer on the right and bottom with `value` to (ph, pw).
pub fn pad_chw(
    data: &[f32],
    c: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    value: f32,
) -> Vec<f32> {
    if (ph, pw) == (h, w) {
        return data.to_vec();
    }
    let mut out = vec![value; c * ph * pw];
    for ch in 0..c {
        for y in 0..h {
            let src = &data[(ch * h + y) * w..(ch * h + y) * w + w];
            out[(ch * ph + y) * pw..(ch * ph + y) * pw + w].copy_from_slice(src);
        }
    }
    out
}

/// Crops the top-left (h, w) window of a CHW buffer of size (ph, pw).
pub fn crop_chw(data: &[f32], c: usize, ph: usize, pw: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            out.extend_from_slice(&data[(ch * ph + y) * pw..(ch * ph + y) * pw + w]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_gray_uses_first_value() {
        let pic = Picture {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![0.5, 1.0],
        };
        let n = Normalize::new(vec![0.5, 9.0, 9.0], vec![0.25, 1.0, 1.0]).unwrap();
        assert_eq!(n.to_chw(&pic), vec![0.0, 2.0]);
    }

    #[test]
    fn pad_then_crop_is_identity() {
        let d: Vec<f32> = (0..2 * 3 * 5).map(|v| v as f32).collect();
        let p = pad_chw(&d, 2, 3, 5, 16, 16, -1.0);
        assert_eq!(p.len(), 2 * 256);
        assert_eq!(p[16 * 16 - 1], -1.0);
        assert_eq!(crop_chw(&p, 2, 16, 16, 3, 5), d);
        assert_eq!(round_up(17, 16), 32);
        assert_eq!(round_up(32, 16), 32);
    }
}
