//! 2x2 stride-2 transposed convolution with bias (U-Net's up-convolution) on
//! [`crate::ops::conv_transpose`].

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::Activation;
use crate::ops::conv_transpose::{ConvTranspose2x2, conv_transpose2x2_backward};
use crate::ops::profile;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;

#[derive(Debug)]
struct ConvTransposeBackward;

impl Backward<Flex, 3> for ConvTransposeBackward {
    /// The input and the weights (`[cin, cout, 2, 2]`).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        let (xd, wd) = (dims(&x), dims(&w));
        let _p = profile::scope("up-convolution backward", 0.0);
        let (dx, dw, db) = conv_transpose2x2_backward(
            &host(&x),
            &host(&g),
            xd[0],
            &host(&w),
            wd[0],
            wd[1],
            xd[2],
            xd[3],
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, &xd));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex(dw, &wd));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex(db, &[wd[1]]));
        }
    }
}

/// `conv_transpose2d(x, weight, bias, stride 2)` with 2x2 kernels, `x` `[n, cin, h, w]`,
/// `weight` `[cin, cout, 2, 2]`, on the autodiff CPU device: `[n, cout, 2h, 2w]`.
pub fn conv_transpose2x2(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    let (x, w, b) = (unwrap(x), unwrap(weight), unwrap(bias));
    let (xd, wd) = (dims(x.primitive()), dims(w.primitive()));
    let (n, cin, h, wid) = (xd[0], xd[1], xd[2], xd[3]);
    assert!(
        wd[0] == cin && wd[2] == 2 && wd[3] == 2,
        "transposed convolution weights {wd:?} for {cin} input channels"
    );
    let cout = wd[1];
    let _p = profile::scope("up-convolution forward", 0.0);
    let layer = ConvTranspose2x2::new(
        &host(w.primitive()),
        Some(host(b.primitive()).to_vec()),
        cin,
        cout,
    );
    let xs = host(x.primitive());
    let (per_in, per_out) = (cin * h * wid, cout * 4 * h * wid);
    let mut y = vec![0.0f32; n * per_out];
    for i in 0..n {
        let (xi, yi) = (
            &xs[i * per_in..][..per_in],
            &mut y[i * per_out..][..per_out],
        );
        layer.forward_into(xi, h, wid, Activation::None, yi);
    }
    let y = flex(y, &[n, cout, 2 * h, 2 * wid]);
    let out = match ConvTransposeBackward
        .prepare::<NoCheckpointing>([x.node(), w.node(), b.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive().clone(), w.primitive().clone()), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    wrap::<4>(out)
}
