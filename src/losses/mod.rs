//! Segmentation losses on `[N, C, H, W]` logits: cross-entropy, Dice, focal, and weighted sums
//! of them (`ce+dice`).

pub mod border_weights;
pub mod cross_entropy;
pub mod dice;
pub mod focal;

pub use cross_entropy::cross_entropy;
pub use dice::dice_loss;
pub use focal::focal_loss;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    Ce,
    Dice,
    Focal,
}

/// A weighted sum of losses, e.g. `ce+dice` with weights `1,1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub terms: Vec<(LossKind, f32)>,
    pub num_classes: usize,
    pub ignore_index: Option<u32>,
    /// Per-class weights of cross-entropy.
    pub class_weights: Option<Vec<f32>>,
    pub focal_gamma: f32,
    /// Per-class alpha of the focal loss.
    pub focal_alpha: Option<Vec<f32>>,
    pub dice_smooth: f32,
    /// The U-Net paper's weight map `(w0, sigma)` ([`border_weights`]) on cross-entropy and
    /// focal terms.
    #[serde(default)]
    pub border_weights: Option<(f32, f32)>,
}

impl LossConfig {
    /// Parses `ce`, `dice`, `focal`, `ce+dice`, ... with optional weights (`1,0.5`).
    pub fn parse(
        spec: &str,
        weights: Option<&[f32]>,
        num_classes: usize,
        ignore_index: Option<u32>,
    ) -> Result<Self> {
        let kinds: Vec<LossKind> = spec
            .split('+')
            .map(|s| match s.trim().to_ascii_lowercase().as_str() {
                "ce" | "cross-entropy" | "crossentropy" => Ok(LossKind::Ce),
                "dice" => Ok(LossKind::Dice),
                "focal" => Ok(LossKind::Focal),
                other => {
                    bail!("unknown loss '{other}' (use ce, dice, focal or a sum such as ce+dice)")
                }
            })
            .collect::<Result<_>>()?;
        let weights: Vec<f32> = match weights {
            None => vec![1.0; kinds.len()],
            Some(w) if w.len() == kinds.len() => w.to_vec(),
            Some(w) => bail!(
                "--loss {spec} has {} terms but --loss-weights gives {} values",
                kinds.len(),
                w.len()
            ),
        };
        Ok(Self {
            terms: kinds.into_iter().zip(weights).collect(),
            num_classes,
            ignore_index,
            class_weights: None,
            focal_gamma: 2.0,
            focal_alpha: None,
            dice_smooth: 1.0,
            border_weights: None,
        })
    }

    pub fn needs_onehot(&self) -> bool {
        self.terms.iter().any(|(k, _)| *k == LossKind::Dice)
    }

    /// Target tensors for a batch of label maps (`labels` is N*H*W, row-major).
    pub fn targets(
        &self,
        labels: &[u32],
        n: usize,
        h: usize,
        w: usize,
        device: &Device,
    ) -> Targets {
        Targets::new(labels, None, [n, h, w], self, device)
    }

    /// [`targets`](Self::targets) with a weight per pixel (N*H*W, e.g. [`border_weights`] maps)
    /// on the cross-entropy and focal terms.
    pub fn targets_weighted(
        &self,
        labels: &[u32],
        pixel_weights: &[f32],
        n: usize,
        h: usize,
        w: usize,
        device: &Device,
    ) -> Targets {
        Targets::new(labels, Some(pixel_weights), [n, h, w], self, device)
    }

    /// The weight map of one `h x w` mask, when `border_weights` is set.
    pub fn weight_map(&self, labels: &[u32], h: usize, w: usize) -> Option<Vec<f32>> {
        self.border_weights.map(|(w0, sigma)| {
            border_weights::border_weight_map(
                labels,
                h,
                w,
                self.num_classes,
                self.ignore_index,
                w0,
                sigma,
            )
        })
    }

    /// The weighted sum of the terms, and each term's value tensor. Cross-entropy and Dice
    /// on the autodiff CPU device run as one fused operation ([`crate::autodiff`]).
    pub fn forward(&self, logits: Tensor<4>, t: &Targets) -> (Tensor<1>, Vec<Tensor<1>>) {
        if let Some(fused) = self.forward_fused(&logits, t) {
            return fused;
        }
        let mut parts = Vec::new();
        let mut total: Option<Tensor<1>> = None;
        for (kind, weight) in &self.terms {
            let v = match kind {
                LossKind::Ce => cross_entropy(logits.clone(), t),
                LossKind::Dice => dice_loss(logits.clone(), t, self.dice_smooth),
                LossKind::Focal => focal_loss(logits.clone(), t, self.focal_gamma),
            };
            parts.push(v.clone());
            let v = v * *weight;
            total = Some(match total {
                Some(a) => a + v,
                None => v,
            });
        }
        (total.expect("a loss needs at least one term"), parts)
    }
}

impl LossConfig {
    /// Cross-entropy and Dice terms (each at most once) on the engine's fused operation.
    fn forward_fused(
        &self,
        logits: &Tensor<4>,
        t: &Targets,
    ) -> Option<(Tensor<1>, Vec<Tensor<1>>)> {
        let weight_of = |k: LossKind| {
            let mut it = self.terms.iter().filter(|(kind, _)| *kind == k);
            let w = it.next().map(|(_, w)| *w);
            (it.next().is_none()).then_some(w)
        };
        let (ce, dice) = (weight_of(LossKind::Ce)?, weight_of(LossKind::Dice)?);
        if self.terms.iter().any(|(k, _)| *k == LossKind::Focal)
            || !crate::autodiff::applies(logits)
        {
            return None;
        }
        let (loss, ce_v, dice_v) = crate::autodiff::softmax_ce_dice_loss(
            logits.clone(),
            &t.host_labels,
            &t.host_ce_weight,
            (ce.unwrap_or(0.0), dice.unwrap_or(0.0)),
            self.dice_smooth,
        );
        let device = logits.device();
        let parts = self
            .terms
            .iter()
            .map(|(k, _)| {
                let v = if *k == LossKind::Ce { ce_v } else { dice_v };
                Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &device)
            })
            .collect();
        Some((loss, parts))
    }
}

/// Targets prepared on the host: class index (ignored pixels -> 0), validity mask, and the
/// per-pixel weights and one-hot maps the configured losses need.
#[derive(Clone, Debug)]
pub struct Targets {
    /// `[N, 1, H, W]` class indices.
    pub index: Tensor<4, Int>,
    /// `[N, 1, H, W]`, 1 where the pixel counts.
    pub valid: Tensor<4>,
    /// `[N, 1, H, W]` cross-entropy weight of each pixel's class (0 when ignored).
    pub class_weight: Option<Tensor<4>>,
    /// `[N, 1, H, W]` focal alpha of each pixel's class (0 when ignored).
    pub alpha: Option<Tensor<4>>,
    /// `[N, C, H, W]` one-hot targets, zero on ignored pixels.
    pub onehot: Option<Tensor<4>>,
    /// `[N, 1, H, W]` weight of each pixel (0 when ignored), multiplying the class weights.
    pub pixel_weight: Option<Tensor<4>>,
    /// The class of each pixel, -1 where ignored (for the fused losses).
    pub host_labels: Vec<i32>,
    /// Each pixel's cross-entropy weight: class weight times pixel weight, 0 where ignored.
    pub host_ce_weight: Vec<f32>,
}

impl Targets {
    pub fn new(
        labels: &[u32],
        pixel_weights: Option<&[f32]>,
        [n, h, w]: [usize; 3],
        cfg: &LossConfig,
        device: &Device,
    ) -> Self {
        assert_eq!(labels.len(), n * h * w);
        let c = cfg.num_classes;
        let valid: Vec<bool> = labels
            .iter()
            .map(|&l| Some(l) != cfg.ignore_index && (l as usize) < c)
            .collect();
        let index: Vec<i32> = labels
            .iter()
            .zip(&valid)
            .map(|(&l, &v)| if v { l as i32 } else { 0 })
            .collect();
        let per_pixel = |table: &[f32]| -> Tensor<4> {
            let v: Vec<f32> = index
                .iter()
                .zip(&valid)
                .map(|(&i, &ok)| if ok { table[i as usize] } else { 0.0 })
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, [n, 1, h, w]), device)
        };
        let onehot = cfg.needs_onehot().then(|| {
            let hw = h * w;
            let mut v = vec![0.0f32; n * c * hw];
            for b in 0..n {
                for p in 0..hw {
                    let k = b * hw + p;
                    if valid[k] {
                        v[(b * c + index[k] as usize) * hw + p] = 1.0;
                    }
                }
            }
            Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), device)
        });
        let validf: Vec<f32> = valid.iter().map(|&v| v as u8 as f32).collect();
        let pixel_weight = pixel_weights.map(|pw| {
            assert_eq!(pw.len(), n * h * w);
            let v: Vec<f32> = pw
                .iter()
                .zip(&valid)
                .map(|(&x, &ok)| if ok { x } else { 0.0 })
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, [n, 1, h, w]), device)
        });
        let host_labels = index
            .iter()
            .zip(&valid)
            .map(|(&i, &ok)| if ok { i } else { -1 })
            .collect();
        let host_ce_weight = (0..n * h * w)
            .map(|k| {
                if !valid[k] {
                    return 0.0;
                }
                let cw = cfg
                    .class_weights
                    .as_deref()
                    .map_or(1.0, |table| table[index[k] as usize]);
                cw * pixel_weights.map_or(1.0, |pw| pw[k])
            })
            .collect();
        Targets {
            host_labels,
            host_ce_weight,
            pixel_weight,
            class_weight: cfg.class_weights.as_deref().map(per_pixel),
            alpha: cfg.focal_alpha.as_deref().map(per_pixel),
            index: Tensor::<4, Int>::from_data(
                TensorData::new(index.clone(), [n, 1, h, w]),
                device,
            ),
            valid: Tensor::<4>::from_data(TensorData::new(validf, [n, 1, h, w]), device),
            onehot,
        }
    }
}
