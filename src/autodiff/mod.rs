//! The host engine's kernels inside burn's autodiff: training operations whose forward and
//! backward passes run on `crate::ops` (Winograd and gemm convolutions, fused BatchNorm +
//! ReLU, indexed max pooling), registered as custom autodiff operations of burn's
//! `Autodiff<Flex>` backend so that they mix freely with burn's own operations in one graph.
//!
//! Each operation applies to tensors on the autodiff CPU device ([`applies`]); models keep
//! burn's generic operations for every other device (`--device vulkan`, plain inference), so
//! results do not depend on the path beyond float rounding. Each backward keeps only what it
//! needs: a convolution its input and weights, BatchNorm + ReLU its input and the batch
//! statistics (the ReLU mask is recomputed), max pooling one byte per output.
//!
//! * `conv`            dense stride-1 convolution (3x3, 1x1)
//! * `batch_norm`      BatchNorm in training mode, ReLU fused
//! * `max_pool`        2x2 max pooling
//! * `conv_transpose`  2x2 stride-2 transposed convolution
//! * `loss`            softmax cross-entropy + soft Dice, the logits' gradient computed with them
//! * `roi_align`       RoIAlign over a batch (Mask R-CNN's pooling), the features' gradient

mod batch_norm;
mod conv;
mod conv_transpose;
mod loss;
mod max_pool;
mod roi_align;

pub use batch_norm::{batch_norm_train, update_running_stats};
pub use conv::conv2d;
pub use conv_transpose::conv_transpose2x2;
pub use loss::softmax_ce_dice_loss;
pub use max_pool::max_pool2x2;
pub use roi_align::{BatchBoxes, roi_align};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::borrow::Cow;

/// The backend these operations are written for: flex under autodiff, without gradient
/// checkpointing (the trainer's default).
type AdFlex = Autodiff<Flex, NoCheckpointing>;
type AdTensor = FloatTensor<AdFlex>;

/// Whether the engine's training operations apply to `t`: an f32 tensor on the autodiff CPU
/// (flex) device.
pub fn applies<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && primitive(t).is_some()
}

/// `t` as an autodiff flex primitive, or `None` when it lives elsewhere.
fn primitive<const D: usize>(t: &Tensor<D>) -> Option<AdTensor> {
    t.clone().try_into_primitive::<AdFlex>().ok()
}

/// The autodiff primitive of a tensor the caller has checked with [`applies`].
fn unwrap<const D: usize>(t: Tensor<D>) -> AdTensor {
    t.try_into_primitive::<AdFlex>().unwrap_or_else(|e| {
        panic!("autodiff operation on a tensor off the autodiff CPU device: {e:?}")
    })
}

fn wrap<const D: usize>(t: AdTensor) -> Tensor<D> {
    Tensor::from_primitive::<AdFlex>(t)
}

/// A flex tensor's values, row-major (borrowed when already contiguous).
fn host(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
    }
}

fn flex(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    use burn::backend::TensorMetadata;
    t.shape().to_vec()
}
