//! 2x2 stride-2 max pooling that remembers one byte per output (which input won).

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::pool::{max_pool2x2_backward, max_pool2x2_indexed};
use crate::ops::profile;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use std::sync::Arc;

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The winners and the input's shape.
    type State = (Arc<Vec<u8>>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (idx, d) = ops.state;
        if let Some(node) = node_x {
            let _p = profile::scope("max-pool backward", 0.0);
            let dx = max_pool2x2_backward(&host(&g), &idx, d[0] * d[1], d[2], d[3]);
            grads.register::<Flex>(node.id, flex(dx, &d));
        }
    }
}

/// `max_pool2d(x, 2, stride 2)` (floor mode) on the autodiff CPU device.
pub fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    let x = unwrap(x);
    let d = dims(x.primitive());
    let _p = profile::scope("max-pool forward", 0.0);
    let (y, idx) = max_pool2x2_indexed(&host(x.primitive()), d[0] * d[1], d[2], d[3]);
    let y = flex(y, &[d[0], d[1], d[2] / 2, d[3] / 2]);
    let out = match MaxPoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((Arc::new(idx), d), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    wrap::<4>(out)
}
