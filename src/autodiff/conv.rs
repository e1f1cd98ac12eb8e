//! Dense stride-1 convolution with bias on [`crate::ops::conv_backward`]: forward on
//! [`ConvKernel`](crate::ops::conv::ConvKernel), the input gradient as the flipped
//! convolution, the weight gradient by Winograd or per-tap products over shifted windows.

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::conv_backward::{ConvShape, conv_forward, conv_input_grad, conv_weight_grad};
use crate::ops::profile;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;

#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 3> for Conv2dBackward {
    /// The input, the weights, the batch size and the shape.
    type State = (FlexTensor, FlexTensor, usize, ConvShape);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w, n, s) = ops.state;
        let g = host(&g);
        let flops = s.flops(n);
        if let Some(node) = node_x {
            let _p = profile::scope("conv input grad", flops);
            let dx = conv_input_grad(&g, n, &host(&w), s);
            grads.register::<Flex>(node.id, flex(dx, &[n, s.cin, s.h, s.w]));
        }
        if node_w.is_some() || node_b.is_some() {
            let _p = profile::scope("conv weight grad", flops);
            let (dw, db) = conv_weight_grad(&host(&x), &g, n, s);
            if let Some(node) = node_w {
                grads.register::<Flex>(node.id, flex(dw, &[s.cout, s.cin, s.k, s.k]));
            }
            if let Some(node) = node_b {
                grads.register::<Flex>(node.id, flex(db, &[s.cout]));
            }
        }
    }
}

/// `conv2d(x, weight, bias)` with stride 1, dilation 1, one group and `pad` on every side;
/// `x` `[n, cin, h, w]`, `weight` `[cout, cin, k, k]`. All three on the autodiff CPU device
/// (see [`applies`](super::applies)).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, pad: usize) -> Tensor<4> {
    let (x, w, b) = (unwrap(x), unwrap(weight), unwrap(bias));
    let xd = dims(x.primitive());
    let wd = dims(w.primitive());
    assert_eq!(xd[1], wd[1], "convolution input channels");
    assert_eq!(wd[2], wd[3], "square convolution kernels");
    let s = ConvShape {
        cin: wd[1],
        cout: wd[0],
        k: wd[2],
        pad,
        h: xd[2],
        w: xd[3],
    };
    let n = xd[0];
    s.check();
    let (ho, wo) = s.out_size();
    let _p = profile::scope("conv forward", s.flops(n));
    let y = conv_forward(
        &host(x.primitive()),
        n,
        &host(w.primitive()),
        &host(b.primitive()),
        s,
    );
    let y = flex(y, &[n, s.cout, ho, wo]);
    let out = match Conv2dBackward
        .prepare::<NoCheckpointing>([x.node(), w.node(), b.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (x.primitive().clone(), w.primitive().clone(), n, s);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    wrap::<4>(out)
}
