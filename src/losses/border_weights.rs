//! The U-Net paper's loss weight map (Ronneberger et al. 2015, eq. 2):
//! `w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`, where `w_c` balances the class
//! frequencies and `d1`, `d2` are the distances from a background pixel to the nearest and the
//! second nearest object, so that the thin background between touching objects weighs most.
//!
//! Choices where the paper is silent, as the common reimplementations make them: objects are the
//! 4-connected components of each class > 0; the separation term is added on background (class
//! 0) pixels only; `w_c` is the "balanced" weight `n / (k * n_c)` of the `k` classes present in
//! the mask; ignored pixels weigh 0. Distances are Euclidean to the nearest pixel of an object
//! (exact, Felzenszwalb and Huttenlocher's squared distance transform), computed only within
//! `6 sigma` of each object, beyond which the term is below `w0 * exp(-18)`.

use crate::ops::components::{Connectivity, connected_components};

/// The weight of every pixel of a row-major `h x w` label map.
pub fn border_weight_map(
    labels: &[u32],
    h: usize,
    w: usize,
    num_classes: usize,
    ignore: Option<u32>,
    w0: f32,
    sigma: f32,
) -> Vec<f32> {
    assert_eq!(labels.len(), h * w);
    let valid = |l: u32| Some(l) != ignore && (l as usize) < num_classes;
    // Class balance over the valid pixels.
    let mut counts = vec![0usize; num_classes];
    for &l in labels {
        if valid(l) {
            counts[l as usize] += 1;
        }
    }
    let n: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let wc: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (present * c) as f32
            }
        })
        .collect();
    let mut out: Vec<f32> = labels
        .iter()
        .map(|&l| if valid(l) { wc[l as usize] } else { 0.0 })
        .collect();
    if w0 == 0.0 || sigma.is_nan() || sigma <= 0.0 {
        return out;
    }
    // The two smallest distances to objects, per pixel.
    let mut d1 = vec![f32::INFINITY; h * w];
    let mut d2 = vec![f32::INFINITY; h * w];
    let reach = (6.0 * sigma).ceil() as usize + 1;
    for class in 1..num_classes as u32 {
        let m: Vec<u8> = labels.iter().map(|&l| (l == class) as u8).collect();
        if !m.contains(&1) {
            continue;
        }
        let (ids, sizes) = connected_components(&m, h, w, Connectivity::Four);
        let k = sizes.len() - 1;
        // Bounding boxes of the objects.
        let mut bbox = vec![(usize::MAX, usize::MAX, 0usize, 0usize); k + 1];
        for (i, &id) in ids.iter().enumerate() {
            if id != 0 {
                let (y, x) = (i / w, i % w);
                let b = &mut bbox[id as usize];
                b.0 = b.0.min(y);
                b.1 = b.1.min(x);
                b.2 = b.2.max(y);
                b.3 = b.3.max(x);
            }
        }
        for (id, &(t, l, b, r)) in bbox.iter().enumerate().skip(1) {
            let (y0, x0) = (t.saturating_sub(reach), l.saturating_sub(reach));
            let (y1, x1) = ((b + reach + 1).min(h), (r + reach + 1).min(w));
            let (wh, ww) = (y1 - y0, x1 - x0);
            let mut f = vec![f32::INFINITY; wh * ww];
            for y in y0..y1 {
                for x in x0..x1 {
                    if ids[y * w + x] == id as u32 {
                        f[(y - y0) * ww + (x - x0)] = 0.0;
                    }
                }
            }
            squared_distance_transform(&mut f, wh, ww);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = f[(y - y0) * ww + (x - x0)].sqrt();
                    let i = y * w + x;
                    if d < d1[i] {
                        d2[i] = d1[i];
                        d1[i] = d;
                    } else if d < d2[i] {
                        d2[i] = d;
                    }
                }
            }
        }
    }
    let two_s2 = 2.0 * sigma * sigma;
    for i in 0..h * w {
        if labels[i] == 0 && valid(0) && d2[i].is_finite() {
            let s = d1[i] + d2[i];
            out[i] += w0 * (-(s * s) / two_s2).exp();
        }
    }
    out
}

/// In place: `f` (0 at features, infinity elsewhere) becomes the squared Euclidean distance to
/// the nearest feature, by rows then columns of 1-D lower envelopes of parabolas.
fn squared_distance_transform(f: &mut [f32], h: usize, w: usize) {
    let n = h.max(w);
    let (mut line, mut out) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut v, mut z) = (vec![0usize; n], vec![0.0f32; n + 1]);
    for y in 0..h {
        line[..w].copy_from_slice(&f[y * w..(y + 1) * w]);
        edt_1d(&line[..w], &mut out[..w], &mut v, &mut z);
        f[y * w..(y + 1) * w].copy_from_slice(&out[..w]);
    }
    for x in 0..w {
        for y in 0..h {
            line[y] = f[y * w + x];
        }
        edt_1d(&line[..h], &mut out[..h], &mut v, &mut z);
        for y in 0..h {
            f[y * w + x] = out[y];
        }
    }
}

/// One dimension of the squared distance transform (Felzenszwalb and Huttenlocher 2012).
fn edt_1d(f: &[f32], d: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    // Only finite samples define parabolas.
    let mut k: isize = -1;
    for q in 0..n {
        if !f[q].is_finite() {
            continue;
        }
        loop {
            if k < 0 {
                k = 0;
                v[0] = q;
                z[0] = f32::NEG_INFINITY;
                z[1] = f32::INFINITY;
                break;
            }
            let p = v[k as usize];
            let s = ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * (q - p) as f32);
            if s <= z[k as usize] {
                k -= 1;
                continue;
            }
            k += 1;
            v[k as usize] = q;
            z[k as usize] = s;
            z[k as usize + 1] = f32::INFINITY;
            break;
        }
    }
    if k < 0 {
        d.fill(f32::INFINITY);
        return;
    }
    let mut j = 0usize;
    for (q, out) in d.iter_mut().enumerate() {
        while z[j + 1] < q as f32 {
            j += 1;
        }
        let p = v[j];
        let dq = q as f32 - p as f32;
        *out = dq * dq + f[p];
    }
}

#[cfg(test)]
mod tests {
    use super::border_weight_map;

    #[test]
    fn two_touching_discs_weigh_most_between_them() {
        // Two discs of radius 10 whose edges are one background pixel apart.
        let (h, w) = (40, 60);
        let mut labels = vec![0u32; h * w];
        for y in 0..h {
            for x in 0..w {
                let inside =
                    |cx: f32| ((x as f32 - cx).powi(2) + (y as f32 - 20.0).powi(2)).sqrt() <= 10.0;
                if inside(19.0) || inside(41.0) {
                    labels[y * w + x] = 1;
                }
            }
        }
        let m = border_weight_map(&labels, h, w, 2, None, 10.0, 5.0);
        let (i_max, &v_max) = m
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        // The gap pixel (30, 20): one pixel from each disc, w_c(background) + 10 exp(-4 / 50).
        assert_eq!((i_max % w, i_max / w), (30, 20));
        let n1 = labels.iter().filter(|&&l| l == 1).count() as f32;
        let wc0 = (h * w) as f32 / (2.0 * (h * w) as f32 - 2.0 * n1);
        assert!(
            (v_max - (wc0 + 10.0 * (-4.0f32 / 50.0).exp())).abs() < 1e-4,
            "{v_max}"
        );
        // Inside a disc: only the class weight.
        let wc1 = (h * w) as f32 / (2.0 * n1);
        assert!((m[20 * w + 19] - wc1).abs() < 1e-5);
    }
}
