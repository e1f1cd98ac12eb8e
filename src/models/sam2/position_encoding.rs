//! The sine position encoding of SAM 2's feature maps (`PositionEmbeddingSine`, normalised,
//! temperature 10000): half the channels encode the row, half the column, each as
//! interleaved sines and cosines of the position scaled to `(0, 2 pi]`. Used with the
//! backbone's features by the video model's memory attention.

/// `[channels, h, w]`: channels `0..C/2` from the row, `C/2..C` from the column, in f32 as
/// the reference computes them.
pub fn sine(channels: usize, h: usize, w: usize) -> Vec<f32> {
    let npf = channels / 2;
    let scale = 2.0 * std::f32::consts::PI;
    let dim_t: Vec<f32> = (0..npf)
        .map(|i| 10000f32.powf((2 * (i / 2)) as f32 / npf as f32))
        .collect();
    let embed = |pos: usize, n: usize| (pos + 1) as f32 / (n as f32 + 1e-6) * scale;
    let mut out = vec![0.0f32; channels * h * w];
    let wave = |v: f32, i: usize| {
        let a = v / dim_t[i];
        if i.is_multiple_of(2) {
            a.sin()
        } else {
            a.cos()
        }
    };
    for i in 0..npf {
        for y in 0..h {
            let vy = wave(embed(y, h), i);
            out[(i * h + y) * w..][..w].fill(vy);
            for x in 0..w {
                out[((npf + i) * h + y) * w + x] = wave(embed(x, w), i);
            }
        }
    }
    out
}
