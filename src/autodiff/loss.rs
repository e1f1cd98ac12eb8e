//! Softmax cross-entropy + soft Dice (any weighted sum) as one operation on
//! [`crate::ops::loss`]: the logits' gradient is computed with the losses, and backward only
//! scales it by the incoming gradient.

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::loss::softmax_ce_dice;
use crate::ops::profile;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use std::sync::Arc;

#[derive(Debug)]
struct SoftmaxLossBackward;

impl Backward<Flex, 1> for SoftmaxLossBackward {
    /// d loss / d logits and the logits' shape.
    type State = (Arc<Vec<f32>>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let upstream = grads.consume::<Flex>(&ops.node);
        let (grad, d) = ops.state;
        if let Some(node) = node {
            let _p = profile::scope("softmax + CE + Dice backward", 0.0);
            let scale = host(&upstream)[0];
            let g = grad.iter().map(|v| v * scale).collect();
            grads.register::<Flex>(node.id, flex(g, &d));
        }
    }
}

/// `ce_w * cross_entropy + dice_w * dice` of `logits` `[n, c, h, w]` (autodiff CPU device)
/// against `labels` (`[n, h, w]`, negative where ignored) with cross-entropy weights per pixel;
/// returns the loss `[1]` and the two terms' values.
pub fn softmax_ce_dice_loss(
    logits: Tensor<4>,
    labels: &[i32],
    weights: &[f32],
    terms: (f32, f32),
    smooth: f32,
) -> (Tensor<1>, f32, f32) {
    let z = unwrap(logits);
    let d = dims(z.primitive());
    let _p = profile::scope("softmax + CE + Dice forward", 0.0);
    let out = softmax_ce_dice(
        &host(z.primitive()),
        d[0],
        d[1],
        d[2] * d[3],
        labels,
        weights,
        terms,
        smooth,
    );
    let total = flex(vec![terms.0 * out.ce + terms.1 * out.dice], &[1]);
    let loss = match SoftmaxLossBackward
        .prepare::<NoCheckpointing>([z.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((Arc::new(out.grad), d), total),
        OpsKind::UnTracked(prep) => prep.finish(total),
    };
    (wrap::<1>(loss), out.ce, out.dice)
}
