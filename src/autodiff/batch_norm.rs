//! BatchNorm in training mode (batch statistics), optionally with ReLU fused, on
//! [`crate::ops::batch_norm`].

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::batch_norm::{BatchStats, batch_norm_train_backward};
use crate::ops::profile;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::sync::Arc;

/// What the backward pass keeps: the layer's input and parameters and the batch statistics.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    stats: Arc<BatchStats>,
    relu: bool,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let d = dims(&s.x);
        let (n, c) = (d[0], d[1]);
        let hw = d[2..].iter().product();
        let _p = profile::scope("batch norm + ReLU backward", 0.0);
        let (dx, dgamma, dbeta) = batch_norm_train_backward(
            &host(&s.x),
            &host(&g),
            n,
            c,
            hw,
            &s.gamma,
            &s.beta,
            &s.stats,
            s.relu,
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, &d));
        }
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, flex(dgamma, &[c]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex(dbeta, &[c]));
        }
    }
}

/// `relu?(batch_norm(x))` normalised with the batch's own statistics, `x` `[n, c, h, w]`;
/// returns the output and the statistics (for the running averages). All on the autodiff CPU
/// device (see [`applies`](super::applies)).
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> (Tensor<4>, BatchStats) {
    let (x, gm, bt) = (unwrap(x), unwrap(gamma), unwrap(beta));
    let d = dims(x.primitive());
    let (n, c, hw) = (d[0], d[1], d[2] * d[3]);
    let (gv, bv) = (host(gm.primitive()).to_vec(), host(bt.primitive()).to_vec());
    let _p = profile::scope("batch norm + ReLU forward", 0.0);
    let (y, stats) = crate::ops::batch_norm::batch_norm_train(
        &host(x.primitive()),
        n,
        c,
        hw,
        &gv,
        &bv,
        eps as f32,
        relu,
    );
    let y = flex(y, &d);
    let out = match BatchNormBackward
        .prepare::<NoCheckpointing>([x.node(), gm.node(), bt.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                x: x.primitive().clone(),
                gamma: gv,
                beta: bv,
                stats: Arc::new(stats.clone()),
                relu,
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (wrap::<4>(out), stats)
}

/// Moves burn `BatchNorm`'s running averages towards a batch's statistics by its momentum.
/// `unbiased_count`: the number of values per channel when the running variance takes the
/// unbiased batch variance (`nn.BatchNorm2d`); `None` keeps the biased one (burn's rule).
pub fn update_running_stats(
    bn: &burn::nn::BatchNorm,
    stats: &crate::ops::batch_norm::BatchStats,
    unbiased_count: Option<f32>,
    device: &Device,
) {
    let m = bn.momentum;
    let update = |running: Tensor<1>, batch: Vec<f32>| {
        let c = batch.len();
        let batch = Tensor::<1>::from_data(TensorData::new(batch, [c]), device);
        running
            .to_device(device)
            .mul_scalar(1.0 - m)
            .add(batch.mul_scalar(m))
            .detach()
    };
    let var = match unbiased_count {
        Some(n) => stats
            .var
            .iter()
            .map(|v| v * n / (n - 1.0).max(1.0))
            .collect(),
        None => stats.var.clone(),
    };
    bn.running_mean
        .update(update(bn.running_mean.value_sync(), stats.mean.clone()));
    bn.running_var
        .update(update(bn.running_var.value_sync(), var));
}
