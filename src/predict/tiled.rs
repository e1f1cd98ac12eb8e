//! Overlap-tile prediction (the U-Net paper's strategy for images of any size): square tiles
//! every `tile - overlap` pixels, the borders mirrored out, each tile's logits weighted across
//! the overlaps and summed. Rows stream in from a [`RowSource`] and finished rows stream out,
//! so memory is bounded by a band of `tile` rows across the image (input and summed logits),
//! plus one tile's activations: never by the image's area.

use super::SemanticPredictor;
use crate::data::image_io::{LabelMap, Picture};
use crate::data::preprocess::round_up;
use crate::data::rows::{PictureRows, RowSource};
use anyhow::{Result, bail};

/// How an image is cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Side of a square tile (rounded up to the network stride).
    pub tile: usize,
    /// Pixels shared by neighbouring tiles, blended linearly (less than half a tile).
    pub overlap: usize,
}

impl Tiling {
    /// The tile origins along a side of `n` pixels: every `tile - overlap`, the last flush with
    /// the end.
    fn origins(&self, n: usize) -> Vec<usize> {
        if n <= self.tile {
            return vec![0];
        }
        let step = self.tile - self.overlap;
        let mut v: Vec<usize> = (0..)
            .map(|k| k * step)
            .take_while(|&o| o + self.tile < n)
            .collect();
        v.push(n - self.tile);
        v.dedup();
        v
    }

    /// Blending weight of offset `i` in a tile along a side. At an edge shared with another
    /// tile, the outer quarter of the overlap is dropped (weight 0: the zero padding of the
    /// convolutions reaches in from the tile's edge) and the rest of the overlap ramps linearly
    /// up to 1; at the image's edges the weight is 1.
    fn ramp(&self, i: usize, len: usize, first: bool, last: bool) -> f32 {
        let o = self.overlap;
        let drop = o / 4;
        let rise = (o - drop) as f32;
        let edge = |d: usize| -> f32 {
            // d: distance from the shared edge
            if d < drop {
                0.0
            } else {
                ((d - drop + 1) as f32 / (rise + 1.0)).min(1.0)
            }
        };
        let mut w = 1.0f32;
        if !first {
            w = w.min(edge(i));
        }
        if !last {
            w = w.min(edge(len - 1 - i));
        }
        w
    }

    /// Number of tiles an `h x w` image is cut into.
    pub fn count(&self, h: usize, w: usize) -> usize {
        self.origins(h).len() * self.origins(w).len()
    }
}

/// Mirrors index `i` into `0..n` without repeating the edge (numpy's "reflect"), for any
/// distance.
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

impl SemanticPredictor {
    /// The tiling rounded to the network stride, checked.
    fn checked_tiling(&self, tiling: Tiling) -> Result<Tiling> {
        let s = self.model.config.stride();
        let t = Tiling {
            tile: round_up(tiling.tile.max(s), s),
            overlap: tiling.overlap,
        };
        if 2 * t.overlap >= t.tile {
            bail!(
                "--overlap {} must be less than half the tile ({})",
                t.overlap,
                t.tile
            );
        }
        Ok(t)
    }

    /// Overlap-tile prediction of the image `src` streams row by row: `row(y, logits)` is called
    /// for every row in order once no later tile touches it, with the blended logits of the row
    /// (`classes x width`, class-major). `progress(done, total)` after every tile. Host engine
    /// only.
    ///
    /// Memory: `tile` rows of input and about `tile` rows of summed logits across the image's
    /// width, and one tile's activations.
    pub fn predict_rows(
        &self,
        src: &mut dyn RowSource,
        tiling: Tiling,
        row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<()> {
        let Some(engine) = &self.host else {
            bail!("tiled prediction runs on the host engine (--engine host)");
        };
        let tiling = self.checked_tiling(tiling)?;
        let s = self.model.config.stride();
        let (h, w, stored) = (src.height(), src.width(), src.channels());
        let c = self.in_channels();
        let k = engine.num_classes;
        let (ys, xs) = (tiling.origins(h), tiling.origins(w));
        let (th, tw) = (
            round_up(h.min(tiling.tile), s),
            round_up(w.min(tiling.tile), s),
        );
        let norm: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let (m, sd) = self.normalize.channel(ch);
                (m, 1.0 / sd)
            })
            .collect();
        // Input rows [in_start, in_start + rows held), HWC with `stored` channels.
        let mut input: Vec<f32> = Vec::new();
        let mut in_start = 0usize;
        let mut in_end = 0usize;
        // Summed logits and weights of rows [acc_start, acc_start + rows held), row-major then
        // class-major within a row: acc[(r * k + cls) * w + x].
        let mut acc: Vec<f32> = Vec::new();
        let mut weight: Vec<f32> = Vec::new();
        let mut acc_start = 0usize;
        let total = ys.len() * xs.len();
        let row_len = w * stored;
        let mut tile = vec![0.0f32; c * th * tw];
        let mut out_row = vec![0.0f32; k * w];
        for (a, &y0) in ys.iter().enumerate() {
            // The input this band of tiles reads: rows y0..y0 + th, or the whole (short) image
            // when it is mirrored out to the tile.
            let (need_start, need_end) = if h <= th { (0, h) } else { (y0, y0 + th) };
            if need_start > in_start {
                // Bands overlap or touch, so the rows dropped were all read.
                input.drain(..(need_start - in_start) * row_len);
                in_start = need_start;
            }
            if need_end > in_end {
                src.read_rows(need_end - in_end, &mut input)?;
                in_end = need_end;
            }
            let ylen = th.min(h - y0);
            let acc_rows = y0 + ylen - acc_start;
            acc.resize(acc_rows * k * w, 0.0);
            weight.resize(acc_rows * w, 0.0);
            for (b, &x0) in xs.iter().enumerate() {
                for ty in 0..th {
                    let sy = mirror((y0 + ty) as isize, h) - in_start;
                    let line = &input[sy * row_len..(sy + 1) * row_len];
                    for tx in 0..tw {
                        let sx = mirror((x0 + tx) as isize, w);
                        let px = &line[sx * stored..(sx + 1) * stored];
                        for (ch, &(m, inv)) in norm.iter().enumerate() {
                            let v = match (stored, c) {
                                (3, 1) => 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2],
                                // as Picture::with_channels converts
                                _ => px[ch.min(stored - 1)],
                            };
                            tile[(ch * th + ty) * tw + tx] = (v - m) * inv;
                        }
                    }
                }
                let logits = engine.forward(&tile, th, tw)?;
                let xlen = tw.min(w - x0);
                for ty in 0..ylen {
                    let wy = tiling.ramp(ty, ylen, a == 0, a + 1 == ys.len());
                    let r = y0 + ty - acc_start;
                    for tx in 0..xlen {
                        let wt = wy * tiling.ramp(tx, xlen, b == 0, b + 1 == xs.len());
                        weight[r * w + x0 + tx] += wt;
                        for cls in 0..k {
                            acc[(r * k + cls) * w + x0 + tx] +=
                                wt * logits[(cls * th + ty) * tw + tx];
                        }
                    }
                }
                progress(a * xs.len() + b + 1, total);
            }
            // Rows above the next band's first row are final.
            let done_end = ys.get(a + 1).copied().unwrap_or(h);
            let finished = done_end - acc_start;
            for r in 0..finished {
                for cls in 0..k {
                    for x in 0..w {
                        out_row[cls * w + x] = acc[(r * k + cls) * w + x] / weight[r * w + x];
                    }
                }
                row(acc_start + r, &out_row)?;
            }
            acc.drain(..finished * k * w);
            weight.drain(..finished * w);
            acc_start = done_end;
        }
        Ok(())
    }

    /// The class of every pixel, the image predicted in overlapping tiles
    /// ([`predict_rows`](Self::predict_rows)).
    pub fn predict_tiled(
        &self,
        pic: &Picture,
        tiling: Tiling,
        progress: &dyn Fn(usize, usize),
    ) -> Result<LabelMap> {
        let (h, w) = (pic.height, pic.width);
        let mut data = Vec::with_capacity(h * w);
        self.predict_rows(
            &mut PictureRows::borrowed(pic),
            tiling,
            &mut |_, logits| {
                data.extend(argmax_row(logits, w));
                Ok(())
            },
            progress,
        )?;
        Ok(LabelMap {
            width: w,
            height: h,
            data,
        })
    }

    /// The blended logits `[C, H, W]` of [`predict_tiled`](Self::predict_tiled).
    pub fn tiled_logits(
        &self,
        pic: &Picture,
        tiling: Tiling,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<f32>> {
        let (h, w) = (pic.height, pic.width);
        let k = self.model.config.num_classes;
        let mut out = vec![0.0f32; k * h * w];
        self.predict_rows(
            &mut PictureRows::borrowed(pic),
            tiling,
            &mut |y, logits| {
                for cls in 0..k {
                    out[(cls * h + y) * w..(cls * h + y + 1) * w]
                        .copy_from_slice(&logits[cls * w..(cls + 1) * w]);
                }
                Ok(())
            },
            progress,
        )?;
        Ok(out)
    }
}

/// The class of each pixel of one row of class-major logits (`classes x width`; ties go to the
/// lower class).
pub fn argmax_row(logits: &[f32], width: usize) -> impl Iterator<Item = u32> + '_ {
    let k = logits.len() / width;
    (0..width).map(move |x| {
        let mut best = 0;
        let mut bv = logits[x];
        for cls in 1..k {
            let v = logits[cls * width + x];
            if v > bv {
                bv = v;
                best = cls;
            }
        }
        best as u32
    })
}
