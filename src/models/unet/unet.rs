//! The U-Net: contracting path, bottleneck, expanding path with concatenated skips, 1x1 head.

use super::config::UNetConfig;
use super::double_conv::DoubleConv;
use super::up_conv::UpConv;
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
        }
    }

    /// Logits `[N, classes, H, W]` for input `[N, in_channels, H, W]`; H and W must be
    /// multiples of `config.stride()`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut x = x;
        for enc in &self.enc {
            x = enc.forward(x);
            skips.push(x.clone());
            x = self.pool.forward(x);
        }
        x = self.bottleneck.forward(x);
        for i in (0..self.dec.len()).rev() {
            x = self.up[i].forward(x);
            x = Tensor::cat(vec![x, skips[i].clone()], 1);
            x = self.dec[i].forward(x);
        }
        self.out_conv.forward(x)
    }
}
