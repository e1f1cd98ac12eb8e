//! RoIAlign (He et al. 2017) as `torchvision.ops.roi_align`: each box is divided into
//! `out_h x out_w` bins, each bin averages `sampling_ratio^2` bilinear samples (or an adaptive
//! number when `sampling_ratio <= 0`). `aligned=false` is Mask R-CNN's original convention
//! (no half-pixel shift, boxes at least one pixel).

use rayon::prelude::*;

/// The geometry of one RoIAlign call.
#[derive(Clone, Copy, Debug)]
pub struct RoiAlign {
    pub out_h: usize,
    pub out_w: usize,
    pub spatial_scale: f32,
    pub sampling_ratio: i32,
    pub aligned: bool,
}

/// One bilinear sample: the four neighbours' flat indices and weights (all zero outside
/// `[-1, size]`, torchvision's border rule).
#[derive(Clone, Copy, Default)]
struct Tap {
    idx: [u32; 4],
    w: [f32; 4],
}

/// torchvision's bilinear sample position at `(y, x)` of an `h x w` map.
fn tap(h: usize, w: usize, y: f32, x: f32) -> Tap {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return Tap::default();
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let mut y0 = y as usize;
    let y1 = if y0 >= h - 1 {
        y0 = h - 1;
        y = y0 as f32;
        h - 1
    } else {
        y0 + 1
    };
    let mut x0 = x as usize;
    let x1 = if x0 >= w - 1 {
        x0 = w - 1;
        x = x0 as f32;
        w - 1
    } else {
        x0 + 1
    };
    let (ly, lx) = (y - y0 as f32, x - x0 as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Tap {
        idx: [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1].map(|i| i as u32),
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

impl RoiAlign {
    /// Pools `[c, h, w]` features for every box (`[x0, y0, x1, y1]` in input-image
    /// coordinates); returns `[boxes, c, out_h, out_w]`.
    pub fn forward(&self, x: &[f32], c: usize, h: usize, w: usize, boxes: &[[f32; 4]]) -> Vec<f32> {
        assert_eq!(x.len(), c * h * w, "roi_align input size");
        let (oh, ow) = (self.out_h, self.out_w);
        let per_box = c * oh * ow;
        let mut out = vec![0.0f32; boxes.len() * per_box];
        out.par_chunks_mut(per_box)
            .zip(boxes)
            .for_each(|(o, b)| self.one_box(x, c, h, w, b, o));
        out
    }

    /// The bilinear taps of one box (`[x0, y0, x1, y1]`) on an `h x w` map, bin by bin,
    /// `per_bin` per bin (torchvision's `pre_calc`: the same for every channel), and the divisor
    /// of each bin's average.
    fn taps(&self, h: usize, w: usize, b: &[f32; 4]) -> (Vec<Tap>, usize, f32) {
        let (oh, ow) = (self.out_h, self.out_w);
        let offset = if self.aligned { 0.5 } else { 0.0 };
        let s = self.spatial_scale;
        let (x0, y0) = (b[0] * s - offset, b[1] * s - offset);
        let (mut rw, mut rh) = (b[2] * s - offset - x0, b[3] * s - offset - y0);
        if !self.aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / oh as f32, rw / ow as f32);
        let grid = |extent: f32, bins: usize| {
            if self.sampling_ratio > 0 {
                self.sampling_ratio as usize
            } else {
                (extent / bins as f32).ceil() as usize
            }
        };
        let (gh, gw) = (grid(rh, oh), grid(rw, ow));
        let count = (gh * gw).max(1) as f32;
        let mut taps = Vec::with_capacity(oh * ow * gh * gw);
        for py in 0..oh {
            for px in 0..ow {
                for iy in 0..gh {
                    let yy = y0 + py as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                    for ix in 0..gw {
                        let xx = x0 + px as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                        taps.push(tap(h, w, yy, xx));
                    }
                }
            }
        }
        (taps, gh * gw, count)
    }

    fn one_box(&self, x: &[f32], c: usize, h: usize, w: usize, b: &[f32; 4], o: &mut [f32]) {
        let (oh, ow) = (self.out_h, self.out_w);
        let (taps, per_bin, count) = self.taps(h, w, b);
        for ch in 0..c {
            let p = &x[ch * h * w..(ch + 1) * h * w];
            let out = &mut o[ch * oh * ow..(ch + 1) * oh * ow];
            for (bin, v) in out.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for t in &taps[bin * per_bin..(bin + 1) * per_bin] {
                    acc += t.w[0] * p[t.idx[0] as usize]
                        + t.w[1] * p[t.idx[1] as usize]
                        + t.w[2] * p[t.idx[2] as usize]
                        + t.w[3] * p[t.idx[3] as usize];
                }
                *v = acc / count;
            }
        }
    }

    /// The gradient of [`forward`](Self::forward) with respect to its `[c, h, w]` input, given
    /// the gradient `dy` of its `[boxes, c, out_h, out_w]` output (the boxes get none, as in
    /// torchvision): each bin's gradient spread over its samples' four neighbours.
    pub fn backward(
        &self,
        dy: &[f32],
        c: usize,
        h: usize,
        w: usize,
        boxes: &[[f32; 4]],
    ) -> Vec<f32> {
        let (oh, ow) = (self.out_h, self.out_w);
        let per_box = c * oh * ow;
        assert_eq!(dy.len(), boxes.len() * per_box, "roi_align gradient size");
        let taps: Vec<(Vec<Tap>, usize, f32)> =
            boxes.par_iter().map(|b| self.taps(h, w, b)).collect();
        let mut dx = vec![0.0f32; c * h * w];
        // Channels are independent: each thread owns whole planes of the gradient.
        dx.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ch, plane)| {
                for (bi, (taps, per_bin, count)) in taps.iter().enumerate() {
                    let g = &dy[bi * per_box + ch * oh * ow..bi * per_box + (ch + 1) * oh * ow];
                    for (bin, &gv) in g.iter().enumerate() {
                        let gv = gv / count;
                        if gv == 0.0 {
                            continue;
                        }
                        for t in &taps[bin * per_bin..(bin + 1) * per_bin] {
                            for k in 0..4 {
                                plane[t.idx[k] as usize] += t.w[k] * gv;
                            }
                        }
                    }
                }
            });
        dx
    }
}
