//! RoIAlign over a batch of feature maps, its input gradient the transposed sampling (the boxes
//! are constants, as torchvision's `roi_align` treats them under autograd).

use super::{NoCheckpointing, dims, flex, host, unwrap, wrap};
use crate::ops::profile;
use crate::ops::roi_align::RoiAlign;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use std::sync::Arc;

/// Boxes of a batch: `(image index, [x0, y0, x1, y1])` in input-image coordinates.
pub type BatchBoxes = [(usize, [f32; 4])];

#[derive(Debug)]
struct RoiAlignBackward;

/// Each image's boxes, in order, with their rows in the output.
fn per_image(boxes: &BatchBoxes, n: usize) -> Vec<(Vec<usize>, Vec<[f32; 4]>)> {
    let mut out = vec![(Vec::new(), Vec::new()); n];
    for (row, &(b, bx)) in boxes.iter().enumerate() {
        assert!(b < n, "box of image {b} in a batch of {n}");
        out[b].0.push(row);
        out[b].1.push(bx);
    }
    out
}

impl Backward<Flex, 1> for RoiAlignBackward {
    /// The geometry, the boxes and the input's shape.
    type State = (RoiAlign, Arc<Vec<(usize, [f32; 4])>>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (op, boxes, d) = ops.state;
        let Some(node) = node_x else { return };
        let _p = profile::scope("roi-align backward", 0.0);
        let g = host(&g);
        let (c, h, w) = (d[1], d[2], d[3]);
        let per = c * op.out_h * op.out_w;
        let mut dx = Vec::with_capacity(d.iter().product());
        for (rows, bxs) in per_image(&boxes, d[0]) {
            if rows.is_empty() {
                dx.resize(dx.len() + c * h * w, 0.0);
                continue;
            }
            let mut dy = Vec::with_capacity(rows.len() * per);
            for &r in &rows {
                dy.extend_from_slice(&g[r * per..(r + 1) * per]);
            }
            dx.extend(op.backward(&dy, c, h, w, &bxs));
        }
        grads.register::<Flex>(node.id, flex(dx, &d));
    }
}

/// `roi_align(x, boxes, ...)` of `x` `[n, c, h, w]` on the autodiff CPU device:
/// `[boxes, c, out_h, out_w]`, rows in the order of `boxes`.
pub fn roi_align(x: Tensor<4>, boxes: &BatchBoxes, op: RoiAlign) -> Tensor<4> {
    let x = unwrap(x);
    let d = dims(x.primitive());
    let (c, h, w) = (d[1], d[2], d[3]);
    let per = c * op.out_h * op.out_w;
    let _p = profile::scope("roi-align forward", 0.0);
    let xs = host(x.primitive());
    let mut y = vec![0.0f32; boxes.len() * per];
    for (b, (rows, bxs)) in per_image(boxes, d[0]).into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let pooled = op.forward(&xs[b * c * h * w..(b + 1) * c * h * w], c, h, w, &bxs);
        for (j, &r) in rows.iter().enumerate() {
            y[r * per..(r + 1) * per].copy_from_slice(&pooled[j * per..(j + 1) * per]);
        }
    }
    let y = flex(y, &[boxes.len(), c, op.out_h, op.out_w]);
    let out = match RoiAlignBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((op, Arc::new(boxes.to_vec()), d), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    wrap::<4>(out)
}
