//! Moving data between host buffers and burn tensors.

use crate::weights::HostTensor;
use burn::prelude::*;

pub fn tensor4(data: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(data, shape), device)
}

pub fn tensor1(data: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = data.len();
    Tensor::<1>::from_data(TensorData::new(data, [n]), device)
}

/// A host tensor as a burn tensor of rank D (the shape must have D dims).
pub fn from_host<const D: usize>(t: &HostTensor, device: &Device) -> Tensor<D> {
    let shape: [usize; D] = t.shape.clone().try_into().expect("rank mismatch");
    Tensor::<D>::from_data(TensorData::new(t.data.clone(), shape), device)
}

/// Reads a float tensor back into a host tensor.
pub fn to_host<const D: usize>(t: Tensor<D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("float tensor readback");
    HostTensor { shape, data }
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("float tensor readback")
}
