//! A deterministic synthetic dataset for the built-in demo: shapes of several classes (disc,
//! rectangle, triangle, ring) on textured, noisy backgrounds.

use super::folder::Sample;
use super::image_io::{LabelMap, Picture};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const CLASS_NAMES: &[&str] = &["background", "disc", "rectangle", "triangle", "ring"];

/// Base colour of each shape class; every shape gets a jittered version.
const BASE: [[f32; 3]; 5] = [
    [0.0; 3],
    [0.85, 0.25, 0.2],
    [0.2, 0.7, 0.3],
    [0.25, 0.35, 0.9],
    [0.9, 0.8, 0.2],
];

fn inside_triangle(p: (f32, f32), a: (f32, f32), b: (f32, f32), c: (f32, f32)) -> bool {
    let s = |p1: (f32, f32), p2: (f32, f32), p3: (f32, f32)| {
        (p1.0 - p3.0) * (p2.1 - p3.1) - (p2.0 - p3.0) * (p1.1 - p3.1)
    };
    let d1 = s(p, a, b);
    let d2 = s(p, b, c);
    let d3 = s(p, c, a);
    let neg = d1 < 0.0 || d2 < 0.0 || d3 < 0.0;
    let pos = d1 > 0.0 || d2 > 0.0 || d3 > 0.0;
    !(neg && pos)
}

/// Generates image `index` of the dataset with this `seed` (the same inputs give the same sample).
pub fn generate(seed: u64, index: usize, size: usize) -> Sample {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let n = size * size;
    let mut img = vec![0.0f32; n * 3];
    let mut labels = vec![0u32; n];
    // Background: two-colour stripes at a random angle plus blotches.
    let c0: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.2..0.6));
    let c1: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.2..0.6));
    let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
    let freq: f32 = rng.random_range(0.1..0.4);
    let (ca, sa) = (angle.cos(), angle.sin());
    for y in 0..size {
        for x in 0..size {
            let t = ((x as f32 * ca + y as f32 * sa) * freq).sin() * 0.5 + 0.5;
            for k in 0..3 {
                img[(y * size + x) * 3 + k] = c0[k] * t + c1[k] * (1.0 - t);
            }
        }
    }
    let shapes = rng.random_range(2..=4);
    for _ in 0..shapes {
        let class = rng.random_range(1..CLASS_NAMES.len()) as u32;
        let color: [f32; 3] = std::array::from_fn(|k| {
            (BASE[class as usize][k] + rng.random_range(-0.12..0.12)).clamp(0.0, 1.0)
        });
        let s = size as f32;
        let cx = rng.random_range(0.15 * s..0.85 * s);
        let cy = rng.random_range(0.15 * s..0.85 * s);
        let r = rng.random_range(0.08 * s..0.2 * s);
        let aspect = rng.random_range(0.6..1.4f32);
        let rot = rng.random_range(0.0..std::f32::consts::TAU);
        let tri = [0.0f32, 2.094, 4.189].map(|a| {
            (
                cx + r * 1.2 * (a + rot).cos(),
                cy + r * 1.2 * (a + rot).sin(),
            )
        });
        for y in 0..size {
            for x in 0..size {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let (dx, dy) = (px - cx, py - cy);
                let hit = match class {
                    1 => dx * dx + dy * dy <= r * r,
                    2 => dx.abs() <= r * aspect && dy.abs() <= r / aspect,
                    3 => inside_triangle((px, py), tri[0], tri[1], tri[2]),
                    _ => {
                        let d2 = dx * dx + dy * dy;
                        d2 <= r * r && d2 >= (0.55 * r) * (0.55 * r)
                    }
                };
                if hit {
                    labels[y * size + x] = class;
                    img[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&color);
                }
            }
        }
    }
    // Noise over everything.
    for v in img.iter_mut() {
        *v = (*v + rng.random_range(-0.08..0.08f32)).clamp(0.0, 1.0);
    }
    Sample {
        stem: format!("{index:04}"),
        image: Picture {
            width: size,
            height: size,
            channels: 3,
            data: img,
        },
        mask: LabelMap {
            width: size,
            height: size,
            data: labels,
        },
    }
}

/// `count` samples starting at `first`.
pub fn dataset(seed: u64, first: usize, count: usize, size: usize) -> Vec<Sample> {
    (first..first + count)
        .map(|i| generate(seed, i, size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_has_every_class() {
        let a = dataset(7, 0, 20, 64);
        let b = dataset(7, 0, 20, 64);
        assert_eq!(a[3].image, b[3].image);
        assert_eq!(a[3].mask, b[3].mask);
        let mut seen = [false; 5];
        for s in &a {
            for &l in &s.mask.data {
                seen[l as usize] = true;
            }
        }
        assert!(seen.iter().all(|&v| v), "{seen:?}");
        assert_ne!(a[0].image, a[1].image);
    }
}
