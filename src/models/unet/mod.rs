//! U-Net (Ronneberger, Fischer, Brox 2015): a contracting path of double convolutions and
//! max-pooling, an expanding path of up-convolutions whose output is concatenated with the
//! contracting path's feature map of the same scale (skip connection), and a 1x1 output layer.
//!
//! * `config`       the architecture's knobs (the defaults are the classic network)
//! * `double_conv`  the (conv 3x3 -> BatchNorm -> ReLU) x 2 block of both paths
//! * `up_conv`      the expanding path's 2x up-sampling (transposed conv, or bilinear + 1x1 conv)
//! * `unet`         the network
//! * `state_dict`   PyTorch-compatible weights in and out (`enc1.block.0.weight`, ...)
//! * `fold`         burn inference form: BatchNorm folded into the convolutions
//! * `host`         the network on the host engine (folded BatchNorm, Winograd, fused ReLU)
//! * `checkpoint`   segrs checkpoint files (weights + architecture + preprocessing)

pub mod checkpoint;
pub mod config;
pub mod double_conv;
pub mod fold;
pub mod host;
pub mod state_dict;
#[allow(clippy::module_inception)]
pub mod unet;
pub mod up_conv;

pub use config::{UNetConfig, Upsampling};
pub use unet::{TrainOps, UNet};
