//! The U-Net: contracting path, bottleneck, expanding path with concatenated skips, 1x1 head.

use super::config::UNetConfig;
use super::double_conv::{DoubleConv, conv};
use super::up_conv::UpConv;
use crate::autodiff;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct UNet {
    /// Contracting path, level 0 first (PyTorch `enc1`, `enc2`, ...).
    pub enc: Vec<DoubleConv>,
    pub bottleneck: DoubleConv,
    /// Expanding path, indexed by the level it produces (PyTorch `up1`/`dec1` is index 0).
    pub up: Vec<UpConv>,
    pub dec: Vec<DoubleConv>,
    pub out_conv: Conv2d,
    pub pool: MaxPool2d,
    #[module(skip)]
    pub config: UNetConfig,
    /// Which operations a training forward on the CPU runs.
    #[module(skip)]
    pub train_ops: TrainOps,
}

/// The operations of a training forward on the CPU (autodiff flex device). Other devices, and
/// forwards without autodiff, always run burn's generic operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrainOps {
    /// The host engine's kernels with their backward passes ([`crate::autodiff`]).
    #[default]
    Engine,
    /// burn's generic operations.
    Generic,
}

impl UNet {
    /// A randomly initialised network (burn's default initialisers) on `device`.
    pub fn new(config: &UNetConfig, device: &Device) -> Self {
        let c = config;
        let bn = c.batch_norm;
        let mut enc = Vec::new();
        let mut cin = c.in_channels;
        for i in 0..c.depth {
            enc.push(DoubleConv::new(cin, c.width(i), bn, device));
            cin = c.width(i);
        }
        let bottleneck = DoubleConv::new(c.width(c.depth - 1), c.width(c.depth), bn, device);
        let up = (0..c.depth)
            .map(|i| UpConv::new(c.width(i + 1), c.width(i), c.upsampling, device))
            .collect();
        let dec = (0..c.depth)
            .map(|i| DoubleConv::new(2 * c.width(i), c.width(i), bn, device))
            .collect();
        Self {
            enc,
            bottleneck,
            up,
            dec,
            out_conv: Conv2dConfig::new([c.base_width, c.num_classes], [1, 1]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            config: config.clone(),
            train_ops: TrainOps::default(),
        }
    }

    /// Logits `[N, classes, H, W]` for input `[N, in_channels, H, W]`; H and W must be
    /// multiples of `config.stride()`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let engine = self.train_ops == TrainOps::Engine
            && autodiff::applies(&x)
            && autodiff::applies(&self.out_conv.weight.val());
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut x = x;
        for enc in &self.enc {
            x = enc.forward_with(x, engine);
            skips.push(x.clone());
            x = if engine {
                autodiff::max_pool2x2(x)
            } else {
                self.pool.forward(x)
            };
        }
        x = self.bottleneck.forward_with(x, engine);
        for i in (0..self.dec.len()).rev() {
            x = self.up[i].forward_with(x, engine);
            x = Tensor::cat(vec![x, skips[i].clone()], 1);
            x = self.dec[i].forward_with(x, engine);
        }
        conv(&self.out_conv, x, engine)
    }

    /// The same network with `ops` for its training forwards.
    pub fn with_train_ops(mut self, ops: TrainOps) -> Self {
        self.train_ops = ops;
        self
    }
}
