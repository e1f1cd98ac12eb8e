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
        let mut h: Option<Vec<f32>> = None;
        for (i, l) in self.layers.iter().enumerate() {
            let act = if i + 1 < self.layers.len() {
                self.act
            } else {
                Activation::None
            };
            h = Some(l.forward_act(h.as_deref().unwrap_or(x), rows, act));
        }
        h.unwrap_or_else(|| x.to_vec())
    }
}
