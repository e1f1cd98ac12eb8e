//! Training augmentation, applied identically to an image, its mask and any per-pixel extras
//! that travel with it (the border weight map): a random crop, flips, rotation and scale about
//! the crop's centre, the U-Net paper's elastic deformation, and brightness / contrast / gamma
//! jitter of the image's channels.
//!
//! Geometry maps every output pixel to a source coordinate: crop offset, then rotation and zoom
//! about the crop's centre, then the elastic displacement (a coarse grid of random vectors,
//! interpolated per pixel with bicubic convolution). Coordinates that land outside the image
//! are mirrored back in (`reflect_101`, as the paper extrapolates borders); the image and the
//! extras are sampled bilinearly, the mask by the nearest pixel. Window pixels beyond a source
//! smaller than the crop are padding (the channel's fill value, mask `pad_label`), as before.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The U-Net paper's elastic deformation: displacement vectors on a coarse `grid x grid` grid
/// spread over the crop (corners included), each component drawn from N(0, sigma^2) pixels,
/// interpolated per pixel with bicubic convolution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elastic {
    pub sigma: f32,
    pub grid: usize,
}

impl Elastic {
    /// The paper's values: a 3x3 grid, sigma 10 px.
    pub const PAPER: Elastic = Elastic {
        sigma: 10.0,
        grid: 3,
    };
}

/// Rotation, zoom and elastic deformation; all off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Rotation angle drawn uniformly from `[-rotate, rotate]` degrees.
    pub rotate: f32,
    /// Zoom factor drawn log-uniformly from `[1 / (1 + scale), 1 + scale]`.
    pub scale: f32,
    pub elastic: Option<Elastic>,
}

impl Geometry {
    pub fn is_identity(&self) -> bool {
        self.rotate == 0.0 && self.scale == 0.0 && self.elastic.is_none()
    }
}

/// Jitter of the image's values (in [0, 1], before normalisation), one draw per image for all
/// its channels: `v' = clamp(c * v^g + b)`; off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Intensity {
    /// `b` drawn uniformly from `[-brightness, brightness]`.
    pub brightness: f32,
    /// `c` drawn uniformly from `[1 - contrast, 1 + contrast]`.
    pub contrast: f32,
    /// `g` drawn log-uniformly from `[1 / (1 + gamma), 1 + gamma]`.
    pub gamma: f32,
}

impl Intensity {
    pub fn is_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.gamma == 0.0
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AugmentConfig {
    /// Crop side (square); images smaller than it are padded (fill values, mask `pad_label`).
    pub crop: Option<usize>,
    pub hflip: bool,
    pub vflip: bool,
    pub pad_label: u32,
    pub geometry: Geometry,
    pub intensity: Intensity,
}

/// What one augmentation reads: `channels` planes of `height x width` (CHW), of which the first
/// `image_channels` are the image (in [0, 1]; intensity jitter applies to them) and the rest
/// extras moved with it, plus the mask.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub chw: &'a [f32],
    pub labels: &'a [u32],
    pub channels: usize,
    pub image_channels: usize,
    pub height: usize,
    pub width: usize,
    /// Per channel: the value of padding beyond the source.
    pub fill: &'a [f32],
}

/// An augmented image (CHW, all the source's channels) and its labels, at one size.
#[derive(Clone, Debug)]
pub struct Crop {
    pub chw: Vec<f32>,
    pub labels: Vec<u32>,
    pub height: usize,
    pub width: usize,
}

/// Per-pixel displacement `(dy, dx)` of an `h x w` window from displacement vectors on a
/// `g x g` grid (`grid_dy`, `grid_dx` row-major), the grid's outer points on the window's
/// corners, interpolated separably with bicubic convolution (Keys, a = -0.5; indices beyond the
/// grid clamped).
pub fn elastic_field(
    grid_dy: &[f32],
    grid_dx: &[f32],
    g: usize,
    h: usize,
    w: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert!(g >= 2 && grid_dy.len() == g * g && grid_dx.len() == g * g);
    // Interpolation taps and weights for each position along a side of n pixels.
    let taps = |n: usize| -> Vec<([usize; 4], [f32; 4])> {
        (0..n)
            .map(|i| {
                let u = if n > 1 {
                    i as f32 * (g - 1) as f32 / (n - 1) as f32
                } else {
                    0.0
                };
                let base = (u.floor() as isize).min(g as isize - 2);
                let t = u - base as f32;
                let idx = [-1, 0, 1, 2].map(|k| (base + k).clamp(0, g as isize - 1) as usize);
                (idx, cubic_weights(t))
            })
            .collect()
    };
    let (ty, tx) = (taps(h), taps(w));
    let interpolate = |grid: &[f32]| -> Vec<f32> {
        // Along x for every grid row, then along y.
        let mut rows = vec![0.0f32; g * w];
        for r in 0..g {
            for (x, (idx, wt)) in tx.iter().enumerate() {
                rows[r * w + x] = (0..4).map(|k| wt[k] * grid[r * g + idx[k]]).sum();
            }
        }
        let mut out = vec![0.0f32; h * w];
        for (y, (idx, wt)) in ty.iter().enumerate() {
            for x in 0..w {
                out[y * w + x] = (0..4).map(|k| wt[k] * rows[idx[k] * w + x]).sum();
            }
        }
        out
    };
    (interpolate(grid_dy), interpolate(grid_dx))
}

/// Bicubic convolution weights (Keys 1981, a = -0.5) of the taps at -1, 0, 1, 2 for a point at
/// `t` in [0, 1].
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.5;
    let near = |d: f32| ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    let far = |d: f32| ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Mirrors a coordinate into `[0, n - 1]` without repeating the edge (`reflect_101`), for any
/// distance.
pub fn reflect(v: f32, n: usize) -> f32 {
    if n == 1 {
        return 0.0;
    }
    let period = 2.0 * (n - 1) as f32;
    let m = v.rem_euclid(period);
    if m <= (n - 1) as f32 { m } else { period - m }
}

/// Where each pixel of the output window samples the source, relative to the window's origin.
pub struct Warp {
    /// Rows of the rotation / zoom matrix applied to (dy, dx) from the window's centre.
    m: [f32; 4],
    field: Option<(Vec<f32>, Vec<f32>)>,
    h: usize,
    w: usize,
}

impl Warp {
    /// Draws a warp of an `h x w` window; None when `geometry` is the identity.
    pub fn draw(rng: &mut impl Rng, geometry: &Geometry, h: usize, w: usize) -> Option<Warp> {
        if geometry.is_identity() {
            return None;
        }
        let angle = if geometry.rotate > 0.0 {
            rng.random_range(-geometry.rotate..=geometry.rotate)
                .to_radians()
        } else {
            0.0
        };
        let zoom = if geometry.scale > 0.0 {
            let l = (1.0 + geometry.scale).ln();
            rng.random_range(-l..=l).exp()
        } else {
            1.0
        };
        let field = geometry.elastic.map(|e| {
            let g = e.grid.max(2);
            let mut draw = || {
                (0..g * g)
                    .map(|_| e.sigma * standard_normal(rng))
                    .collect::<Vec<f32>>()
            };
            let (gy, gx) = (draw(), draw());
            elastic_field(&gy, &gx, g, h, w)
        });
        Some(Warp::new(angle, zoom, field, h, w))
    }

    /// A warp with the given rotation (radians), zoom (> 1 enlarges) and per-pixel field.
    pub fn new(
        angle: f32,
        zoom: f32,
        field: Option<(Vec<f32>, Vec<f32>)>,
        h: usize,
        w: usize,
    ) -> Warp {
        let (s, c) = angle.sin_cos();
        Warp {
            m: [c / zoom, -s / zoom, s / zoom, c / zoom],
            field,
            h,
            w,
        }
    }

    /// The source coordinate `(y, x)` of output pixel `(y, x)`, relative to the window's origin.
    pub fn source(&self, y: usize, x: usize) -> (f32, f32) {
        let cy = (self.h as f32 - 1.0) / 2.0;
        let cx = (self.w as f32 - 1.0) / 2.0;
        let (dy, dx) = (y as f32 - cy, x as f32 - cx);
        let mut sy = cy + self.m[0] * dy + self.m[1] * dx;
        let mut sx = cx + self.m[2] * dy + self.m[3] * dx;
        if let Some((fy, fx)) = &self.field {
            sy += fy[y * self.w + x];
            sx += fx[y * self.w + x];
        }
        (sy, sx)
    }
}

/// One draw from N(0, 1) (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Applies crop, warp, flips and intensity jitter with draws from `rng`.
pub fn augment(rng: &mut impl Rng, src: &Source, cfg: &AugmentConfig) -> Crop {
    let (h, w) = (src.height, src.width);
    let (oh, ow) = match cfg.crop {
        Some(s) => (s, s),
        None => (h, w),
    };
    // Offsets of the window in the source (may be negative => padding).
    let y0 = if h >= oh {
        rng.random_range(0..=h - oh) as isize
    } else {
        -(rng.random_range(0..=oh - h) as isize)
    };
    let x0 = if w >= ow {
        rng.random_range(0..=w - ow) as isize
    } else {
        -(rng.random_range(0..=ow - w) as isize)
    };
    let hflip = cfg.hflip && rng.random_bool(0.5);
    let vflip = cfg.vflip && rng.random_bool(0.5);
    let warp = Warp::draw(rng, &cfg.geometry, oh, ow);
    let jitter = draw_intensity(rng, &cfg.intensity);
    let mut crop = sample(src, oh, ow, y0, x0, warp.as_ref(), cfg.pad_label);
    if let Some((b, c, g)) = jitter {
        // On the pixels read from the source; padding keeps its fill value.
        let plane = oh * ow;
        let rows =
            (y0.max(0) - y0) as usize..((src.height as isize - y0).min(oh as isize)) as usize;
        let cols = (x0.max(0) - x0) as usize..((src.width as isize - x0).min(ow as isize)) as usize;
        for ch in 0..src.image_channels {
            for y in rows.clone() {
                for v in &mut crop.chw[ch * plane + y * ow..][cols.clone()] {
                    *v = (c * v.clamp(0.0, 1.0).powf(g) + b).clamp(0.0, 1.0);
                }
            }
        }
    }
    if hflip || vflip {
        flip(&mut crop, src.channels, hflip, vflip);
    }
    crop
}

fn draw_intensity(rng: &mut impl Rng, i: &Intensity) -> Option<(f32, f32, f32)> {
    if i.is_identity() {
        return None;
    }
    let b = if i.brightness > 0.0 {
        rng.random_range(-i.brightness..=i.brightness)
    } else {
        0.0
    };
    let c = if i.contrast > 0.0 {
        rng.random_range(1.0 - i.contrast..=1.0 + i.contrast)
    } else {
        1.0
    };
    let g = if i.gamma > 0.0 {
        let l = (1.0 + i.gamma).ln();
        rng.random_range(-l..=l).exp()
    } else {
        1.0
    };
    Some((b, c, g))
}

/// Samples the `oh x ow` window at (y0, x0) of the source through `warp`.
pub fn sample(
    src: &Source,
    oh: usize,
    ow: usize,
    y0: isize,
    x0: isize,
    warp: Option<&Warp>,
    pad_label: u32,
) -> Crop {
    let (h, w, c) = (src.height, src.width, src.channels);
    let plane = oh * ow;
    let mut out = vec![0.0f32; c * plane];
    for ch in 0..c {
        out[ch * plane..(ch + 1) * plane].fill(src.fill[ch]);
    }
    let mut lab = vec![pad_label; plane];
    for y in 0..oh {
        let by = y as isize + y0;
        if by < 0 || by >= h as isize {
            continue;
        }
        for x in 0..ow {
            let bx = x as isize + x0;
            if bx < 0 || bx >= w as isize {
                continue;
            }
            let o = y * ow + x;
            let Some(warp) = warp else {
                let si = by as usize * w + bx as usize;
                lab[o] = src.labels[si];
                for ch in 0..c {
                    out[ch * plane + o] = src.chw[ch * h * w + si];
                }
                continue;
            };
            let (sy, sx) = warp.source(y, x);
            let sy = reflect(sy + y0 as f32, h);
            let sx = reflect(sx + x0 as f32, w);
            let (ny, nx) = (
                (sy.round() as usize).min(h - 1),
                (sx.round() as usize).min(w - 1),
            );
            lab[o] = src.labels[ny * w + nx];
            let (iy, ix) = (sy.floor() as usize, sx.floor() as usize);
            let (fy, fx) = (sy - iy as f32, sx - ix as f32);
            let (iy1, ix1) = ((iy + 1).min(h - 1), (ix + 1).min(w - 1));
            for ch in 0..c {
                let p = &src.chw[ch * h * w..(ch + 1) * h * w];
                let top = p[iy * w + ix] * (1.0 - fx) + p[iy * w + ix1] * fx;
                let bottom = p[iy1 * w + ix] * (1.0 - fx) + p[iy1 * w + ix1] * fx;
                out[ch * plane + o] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    Crop {
        chw: out,
        labels: lab,
        height: oh,
        width: ow,
    }
}

/// Mirrors a crop horizontally and / or vertically, in place.
fn flip(crop: &mut Crop, channels: usize, hflip: bool, vflip: bool) {
    let (h, w) = (crop.height, crop.width);
    let map = |i: usize| {
        let (y, x) = (i / w, i % w);
        let ty = if vflip { h - 1 - y } else { y };
        let tx = if hflip { w - 1 - x } else { x };
        ty * w + tx
    };
    let lab = crop.labels.clone();
    for (i, v) in lab.into_iter().enumerate() {
        crop.labels[map(i)] = v;
    }
    for ch in 0..channels {
        let plane = &mut crop.chw[ch * h * w..(ch + 1) * h * w];
        let old = plane.to_vec();
        for (i, v) in old.into_iter().enumerate() {
            plane[map(i)] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn source<'a>(chw: &'a [f32], labels: &'a [u32], h: usize, w: usize) -> Source<'a> {
        Source {
            chw,
            labels,
            channels: 1,
            image_channels: 1,
            height: h,
            width: w,
            fill: &[0.0],
        }
    }

    #[test]
    fn crop_keeps_image_and_mask_aligned() {
        let (h, w) = (20, 30);
        // The label of each pixel encodes its position; the image holds the same value.
        let labels: Vec<u32> = (0..(h * w) as u32).collect();
        let chw: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let cfg = AugmentConfig {
            crop: Some(16),
            hflip: true,
            vflip: true,
            pad_label: 255,
            ..Default::default()
        };
        for _ in 0..20 {
            let c = augment(&mut rng, &source(&chw, &labels, h, w), &cfg);
            assert_eq!(c.labels.len(), 256);
            for (l, v) in c.labels.iter().zip(&c.chw) {
                assert_eq!(*l as f32, *v);
            }
        }
    }

    #[test]
    fn small_images_are_padded_with_pad_label() {
        let labels = vec![1u32; 4 * 4];
        let chw = vec![1.0f32; 4 * 4];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
        let cfg = AugmentConfig {
            crop: Some(8),
            pad_label: 255,
            intensity: Intensity {
                brightness: 0.3,
                contrast: 0.3,
                gamma: 0.3,
            },
            ..Default::default()
        };
        let c = augment(&mut rng, &source(&chw, &labels, 4, 4), &cfg);
        assert_eq!(c.labels.iter().filter(|&&l| l == 1).count(), 16);
        assert_eq!(c.labels.iter().filter(|&&l| l == 255).count(), 48);
        // Padding keeps the fill value through the jitter.
        for (l, v) in c.labels.iter().zip(&c.chw) {
            if *l == 255 {
                assert_eq!(*v, 0.0);
            }
        }
    }

    #[test]
    fn warped_image_and_mask_stay_aligned() {
        // Four quadrants with labels 0..4 and the same values in the image: after rotation,
        // zoom and elastic deformation, the bilinear image still reads the nearest-sampled label
        // except along the quadrant edges.
        let (h, w) = (64, 64);
        let labels: Vec<u32> = (0..h * w)
            .map(|i| ((i / w >= h / 2) as u32) * 2 + (i % w >= w / 2) as u32)
            .collect();
        let chw: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        let cfg = AugmentConfig {
            crop: Some(48),
            hflip: true,
            vflip: true,
            geometry: Geometry {
                rotate: 30.0,
                scale: 0.2,
                elastic: Some(Elastic::PAPER),
            },
            ..Default::default()
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut changed = false;
        for _ in 0..10 {
            let c = augment(&mut rng, &source(&chw, &labels, h, w), &cfg);
            let agree = c
                .labels
                .iter()
                .zip(&c.chw)
                .filter(|(l, v)| (**l as f32 - **v).abs() < 0.5)
                .count();
            assert!(agree as f32 >= 0.97 * c.labels.len() as f32, "{agree}");
            changed |= c.labels.iter().zip(&c.chw).any(|(_, v)| v.fract() != 0.0);
        }
        assert!(changed, "the warp interpolated nothing");
    }

    #[test]
    fn elastic_field_passes_through_the_grid() {
        let g = 3;
        let dy: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let dx: Vec<f32> = (0..9).map(|i| -(i as f32)).collect();
        let (fy, fx) = elastic_field(&dy, &dx, g, 21, 11);
        for r in 0..3 {
            for c in 0..3 {
                let (y, x) = (r * 10, c * 5);
                assert!((fy[y * 11 + x] - dy[r * 3 + c]).abs() < 1e-5);
                assert!((fx[y * 11 + x] + dy[r * 3 + c]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect(-1.0, 5), 1.0);
        assert_eq!(reflect(5.0, 5), 3.0);
        assert_eq!(reflect(9.0, 5), 1.0);
        assert_eq!(reflect(2.5, 5), 2.5);
    }
}
