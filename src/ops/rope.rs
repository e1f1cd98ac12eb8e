//! Rotary position embeddings on a 2-D grid, axial as SAM 2's memory attention: the first half
//! of each head's (real, imaginary) pairs rotates with the column index, the second half with
//! the row index, at frequencies `theta^(-4i / d)`.

/// Cosines and sines for the `end_x * end_y` grid positions (row-major) and `head_dim / 2`
/// pairs.
#[derive(Clone, Debug)]
pub struct AxialRope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    positions: usize,
    pairs: usize,
}

impl AxialRope {
    /// SAM 2's `compute_axial_cis(dim, end_x, end_y, theta)`.
    pub fn new(head_dim: usize, end_x: usize, end_y: usize, theta: f32) -> Self {
        assert!(
            head_dim.is_multiple_of(4),
            "axial rotary embeddings need head_dim % 4 == 0"
        );
        let quarter = head_dim / 4;
        let freqs: Vec<f32> = (0..quarter)
            .map(|i| 1.0 / theta.powf((4 * i) as f32 / head_dim as f32))
            .collect();
        let positions = end_x * end_y;
        let pairs = head_dim / 2;
        let (mut cos, mut sin) = (vec![0.0; positions * pairs], vec![0.0; positions * pairs]);
        for p in 0..positions {
            let (tx, ty) = ((p % end_x) as f32, (p / end_x) as f32);
            for (i, f) in freqs.iter().enumerate() {
                for (j, t) in [(i, tx), (quarter + i, ty)] {
                    let a = t * f;
                    cos[p * pairs + j] = a.cos();
                    sin[p * pairs + j] = a.sin();
                }
            }
        }
        Self {
            cos,
            sin,
            positions,
            pairs,
        }
    }

    /// Rotates `rows` vectors of `2 * pairs` values in place; row `r` takes position
    /// `r % positions`, so keys that repeat the grid (several memory frames) repeat the table,
    /// as `repeat_freqs_k`.
    pub fn apply(&self, x: &mut [f32], rows: usize) {
        let d = 2 * self.pairs;
        assert_eq!(x.len(), rows * d, "rotary input size");
        for r in 0..rows {
            let p = r % self.positions;
            let (c, s) = (
                &self.cos[p * self.pairs..(p + 1) * self.pairs],
                &self.sin[p * self.pairs..(p + 1) * self.pairs],
            );
            let row = &mut x[r * d..(r + 1) * d];
            for j in 0..self.pairs {
                let (re, im) = (row[2 * j], row[2 * j + 1]);
                row[2 * j] = re * c[j] - im * s[j];
                row[2 * j + 1] = re * s[j] + im * c[j];
            }
        }
    }
}
