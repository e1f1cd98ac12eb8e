//! Multi-head attention with separate query, key, value and output projections (SAM's
//! `Attention`: `q_proj`, `k_proj`, `v_proj`, `out_proj`, the inner width possibly reduced).

use super::linear::Linear;
use super::loader::Weights;
use crate::ops::attention::{HeadView, Hooks, attention};

#[derive(Clone, Debug)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub heads: usize,
}

impl Attention {
    /// `dim -> inner` projections (and `inner -> dim` out), `heads` heads.
    pub fn load(w: &Weights, dim: usize, inner: usize, heads: usize) -> Self {
        Self::load_kv(w, dim, dim, inner, heads)
    }

    /// Keys and values of another width `kv_dim` (cross-attention to memories).
    pub fn load_kv(w: &Weights, dim: usize, kv_dim: usize, inner: usize, heads: usize) -> Self {
        Self {
            q: Linear::load(&w.pp("q_proj"), dim, inner),
            k: Linear::load(&w.pp("k_proj"), kv_dim, inner),
            v: Linear::load(&w.pp("v_proj"), kv_dim, inner),
            out: Linear::load(&w.pp("out_proj"), inner, dim),
            heads,
        }
    }

    /// No hooks, the scores and values products in the precision of the projections.
    pub fn hooks(&self) -> Hooks<'static> {
        Hooks {
            precision: self.q.precision(),
            ..Hooks::default()
        }
    }

    pub fn head_dim(&self) -> usize {
        self.q.out / self.heads
    }

    /// `q` has `nq` rows, `k` and `v` have `nk` rows.
    pub fn forward(
        &self,
        q: &[f32],
        nq: usize,
        k: &[f32],
        v: &[f32],
        nk: usize,
        hooks: Hooks,
    ) -> Vec<f32> {
        let (qp, kp, vp) = (
            self.q.forward(q, nq),
            self.k.forward(k, nk),
            self.v.forward(v, nk),
        );
        self.forward_projected(&qp, nq, &kp, &vp, nk, hooks)
    }

    /// [`forward`](Self::forward) after the three input projections.
    pub fn forward_projected(
        &self,
        q: &[f32],
        nq: usize,
        k: &[f32],
        v: &[f32],
        nk: usize,
        hooks: Hooks,
    ) -> Vec<f32> {
        let d = self.head_dim();
        self.forward_views(
            HeadView::packed(q, nq, d),
            HeadView::packed(k, nk, d),
            HeadView::packed(v, nk, d),
            hooks,
        )
    }

    /// [`forward_projected`](Self::forward_projected) on projections in any head layout
    /// (e.g. keys and values kept head-major between calls).
    pub fn forward_views(&self, q: HeadView, k: HeadView, v: HeadView, hooks: Hooks) -> Vec<f32> {
        let d = self.head_dim();
        let o = attention(q, k, v, self.heads, d, 1.0 / (d as f32).sqrt(), hooks);
        self.out.forward(&o, q.rows)
    }
}
