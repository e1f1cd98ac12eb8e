//! The expanding path's 2x up-sampling, halving the channels.
//! PyTorch keys: `upN.weight`/`upN.bias` (ConvTranspose2d), or `upN.1.*` (Upsample + 1x1 Conv2d).

use super::config::Upsampling;
use crate::autodiff;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

#[derive(Module, Debug)]
pub struct UpConv {
    pub transpose: Option<ConvTranspose2d>,
    pub conv1x1: Option<Conv2d>,
}

impl UpConv {
    pub fn new(cin: usize, cout: usize, mode: Upsampling, device: &Device) -> Self {
        match mode {
            Upsampling::Transpose => Self {
                transpose: Some(
                    ConvTranspose2dConfig::new([cin, cout], [2, 2])
                        .with_stride([2, 2])
                        .init(device),
                ),
                conv1x1: None,
            },
            Upsampling::Bilinear => Self {
                transpose: None,
                conv1x1: Some(Conv2dConfig::new([cin, cout], [1, 1]).init(device)),
            },
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, false)
    }

    /// `engine`: run on the engine's training operations ([`crate::autodiff`]); the caller
    /// checks that they apply to `x`.
    pub fn forward_with(&self, x: Tensor<4>, engine: bool) -> Tensor<4> {
        if let Some(t) = &self.transpose {
            let plain = t.kernel_size == [2, 2]
                && t.stride == [2, 2]
                && t.dilation == [1, 1]
                && t.groups == 1
                && t.padding == [0, 0]
                && t.padding_out == [0, 0];
            return match (&t.bias, engine && plain) {
                (Some(b), true) => autodiff::conv_transpose2x2(x, t.weight.val(), b.val()),
                _ => t.forward(x),
            };
        }
        let [_, _, h, w] = x.dims();
        let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([2 * h, 2 * w]);
        let x = interpolate(x, opts);
        let conv = self.conv1x1.as_ref().expect("UpConv without layers");
        super::double_conv::conv(conv, x, engine)
    }
}
