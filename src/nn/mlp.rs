//! A stack of Linear layers with an activation between them: SAM's `MLPBlock` (`lin1`, `lin2`, GELU) and its decoder `MLP` (`layers.{i}`, ReLU).

use super::linear::Linear;
use super::loader::Weights;
use crate::ops::Activation;

#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub act: Activation,
}

impl Mlp {
    /// Layers named `names` under `w`, of widths `dims[0] -> dims[1] -> ...`.
    pub fn load(w: &Weights, names: &[&str], dims: &[usize], act: Activation) -> Self {
        assert_eq!(names.len() + 1, dims.len(), "one width more than layers");
        let layers = names
            .iter()
            .enumerate()
            .map(|(i, n)| Linear::load(&w.pp(n), dims[i], dims[i + 1]))
            .collect();
        Self { layers, act }
    }

    /// Layers `layers.0 ... layers.{n-1}` (the decoder MLPs' keys).
    pub fn load_numbered(w: &Weights, dims: &[usize], act: Activation) -> Self {
        let names: Vec<String> = (0..dims.len() - 1).map(|i| format!("layers.{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::load(w, &names, dims, act)
    }

    /// `rows` input vectors -> `rows` output vectors; the activation applied as each hidden
    /// layer's product is written.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let Some((last, hidden)) = self.layers.split_last() else {
            return x.to_vec();
        };
        let h = self.hidden(hidden, x, rows);
        last.forward(h.as_deref().unwrap_or(x), rows)
    }

    /// `out += self(x)` (a residual branch): the last layer's product added to `out` as each
    /// tile is written.
    pub fn forward_add(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let Some((last, hidden)) = self.layers.split_last() else {
            return crate::ops::layout::add_assign(out, x);
        };
        let h = self.hidden(hidden, x, rows);
        last.forward_add(h.as_deref().unwrap_or(x), rows, out)
    }

    /// The hidden `layers` on `x`, each activated as it is written (`None` when there are none).
    fn hidden(&self, layers: &[Linear], x: &[f32], rows: usize) -> Option<Vec<f32>> {
        layers.iter().fold(None, |h: Option<Vec<f32>>, l| {
            Some(l.forward_act(h.as_deref().unwrap_or(x), rows, self.act))
        })
    }
}
