//! The U-Net on the host engine (`crate::nn` / `crate::ops`): built from the same named tensors
//! as the burn network (a PyTorch `state_dict` or a segrs checkpoint), with every BatchNorm
//! folded into its convolution at load, 3x3 convolutions by Winograd with the bias and ReLU
//! fused, and skip connections concatenated by placing the two halves next to each other.
//! Same function as `UNet::forward` in eval mode (checked against PyTorch's logits in the
//! tests), built for speed.

use super::config::{UNetConfig, Upsampling};
use super::state_dict;
use super::unet::UNet;
use crate::nn::{Conv2d, ConvSpec, ConvTranspose2d, Weights};
use crate::ops::pool::max_pool2d;
use crate::ops::profile::scope;
use crate::ops::resize::bilinear;
use crate::ops::{Activation, Precision};
use crate::weights::NamedTensors;
use anyhow::{Result, bail};

/// (conv 3x3 -> [BatchNorm] -> ReLU) x 2, folded.
struct DoubleConv {
    c1: Conv2d,
    c2: Conv2d,
}

impl DoubleConv {
    /// Keys `block.0` / `block.1` (BN) / `block.3` / `block.4`, or `block.0` / `block.2`.
    fn load(w: &Weights, cin: usize, cout: usize, batch_norm: bool) -> Self {
        let b = w.pp("block");
        let conv = |i: usize, cin: usize| -> Conv2d {
            let spec = ConvSpec::same(cin, cout, 3);
            if batch_norm {
                Conv2d::load_bn(&b.pp(3 * i), &b.pp(3 * i + 1), spec, 1e-5)
            } else {
                let c = b.pp(2 * i);
                Conv2d::from_parts(
                    c.get("weight", &[cout, cin, 3, 3]),
                    c.get_opt("bias", &[cout]),
                    spec,
                )
                .with_precision(c.precision())
            }
        };
        Self {
            c1: conv(0, cin),
            c2: conv(1, cout),
        }
    }

    fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (y, _, _) = self.c1.forward(x, h, w, Activation::Relu);
        self.c2.forward(&y, h, w, Activation::Relu).0
    }

    /// Floating-point operations of both convolutions on an `h x w` map.
    fn flops(&self, h: usize, w: usize) -> f64 {
        let (a, b) = (&self.c1, &self.c2);
        (2 * 9 * h * w * (a.cin() * a.cout() + b.cin() * b.cout())) as f64
    }
}

/// The expanding path's 2x up-sampling.
enum Up {
    /// `upN.{weight,bias}`: ConvTranspose2d(c, c/2, 2, stride 2).
    Transpose(ConvTranspose2d),
    /// `upN.1.*`: bilinear 2x (align_corners=False), then a 1x1 convolution.
    Bilinear(Conv2d),
}

/// The network on host buffers.
pub struct HostUNet {
    enc: Vec<DoubleConv>,
    bottleneck: DoubleConv,
    up: Vec<Up>,
    dec: Vec<DoubleConv>,
    out: Conv2d,
    pub stride: usize,
    pub num_classes: usize,
}

impl HostUNet {
    /// From PyTorch-named tensors (`enc1.block.0.weight`, ...) of a network with `config`.
    pub fn from_tensors(config: &UNetConfig, src: &NamedTensors) -> Result<Self> {
        Self::from_tensors_with(config, src, Precision::F32)
    }

    /// The network with its convolutions computing in `precision`.
    pub fn from_tensors_with(
        config: &UNetConfig,
        src: &NamedTensors,
        precision: Precision,
    ) -> Result<Self> {
        config.validate()?;
        let w = Weights::new(src).with_precision(precision);
        let (bn, d) = (config.batch_norm, config.depth);
        let width = |l: usize| config.width(l);
        let enc = (0..d)
            .map(|i| {
                let cin = if i == 0 {
                    config.in_channels
                } else {
                    width(i - 1)
                };
                DoubleConv::load(&w.pp(format!("enc{}", i + 1)), cin, width(i), bn)
            })
            .collect();
        let bottleneck = DoubleConv::load(&w.pp("bottleneck"), width(d - 1), width(d), bn);
        let up = (0..d)
            .map(|i| {
                let u = w.pp(format!("up{}", i + 1));
                match config.upsampling {
                    Upsampling::Transpose => Up::Transpose(
                        ConvTranspose2d::load(&u, width(i + 1), width(i))
                            .with_precision(u.precision()),
                    ),
                    Upsampling::Bilinear => Up::Bilinear(Conv2d::load(
                        &u.pp(1),
                        ConvSpec::same(width(i + 1), width(i), 1),
                    )),
                }
            })
            .collect();
        let dec = (0..d)
            .map(|i| DoubleConv::load(&w.pp(format!("dec{}", i + 1)), 2 * width(i), width(i), bn))
            .collect();
        let out = Conv2d::load(
            &w.pp("out_conv"),
            ConvSpec::same(width(0), config.num_classes, 1),
        );
        w.finish("U-Net")?;
        Ok(Self {
            enc,
            bottleneck,
            up,
            dec,
            out,
            stride: config.stride(),
            num_classes: config.num_classes,
        })
    }

    /// From a burn network (its weights exported under the PyTorch names).
    pub fn from_model(model: &UNet) -> Result<Self> {
        Self::from_model_with(model, Precision::F32)
    }

    /// [`from_model`](Self::from_model) computing in `precision`.
    pub fn from_model_with(model: &UNet, precision: Precision) -> Result<Self> {
        let named = NamedTensors {
            tensors: state_dict::export(model),
            source: "in-memory U-Net".into(),
            ..Default::default()
        };
        Self::from_tensors_with(&model.config, &named, precision)
    }

    /// Logits `[classes, H, W]` for one normalised CHW image whose sides are multiples of the
    /// stride.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
        if !h.is_multiple_of(self.stride) || !w.is_multiple_of(self.stride) {
            bail!("input {h}x{w} is not a multiple of {}", self.stride);
        }
        let cin = self.enc[0].c1.cin();
        if x.len() != cin * h * w {
            bail!("input has {} values, expected {cin}x{h}x{w}", x.len());
        }
        let mut skips: Vec<(Vec<f32>, usize, usize)> = Vec::new();
        let (mut cur, mut ch, mut cw) = (x.to_vec(), h, w);
        for b in &self.enc {
            let y = {
                let _t = scope("encoder double conv (3x3, BN, ReLU)", b.flops(ch, cw));
                b.forward(&cur, ch, cw)
            };
            let _t = scope("max-pool 2x2", 0.0);
            cur = max_pool2d(&y, b.c2.cout(), ch, cw, 2, 2, 0).0;
            skips.push((y, ch, cw));
            ch /= 2;
            cw /= 2;
        }
        cur = {
            let _t = scope("bottleneck double conv", self.bottleneck.flops(ch, cw));
            self.bottleneck.forward(&cur, ch, cw)
        };
        for i in (0..self.dec.len()).rev() {
            let (skip, sh, sw) = &skips[i];
            let t = scope("up-sampling", 0.0);
            let mut cat = match &self.up[i] {
                Up::Transpose(t) => t.forward(&cur, ch, cw, Activation::None),
                Up::Bilinear(c) => {
                    let up = bilinear(&cur, c.cin(), (ch, cw), (2 * ch, 2 * cw), false);
                    c.forward(&up, 2 * ch, 2 * cw, Activation::None).0
                }
            };
            drop(t);
            (ch, cw) = (*sh, *sw);
            let t = scope("skip concatenation", 0.0);
            cat.extend_from_slice(skip);
            drop(t);
            let _t = scope(
                "decoder double conv (3x3, BN, ReLU)",
                self.dec[i].flops(ch, cw),
            );
            cur = self.dec[i].forward(&cat, ch, cw);
        }
        let o = &self.out;
        let _t = scope("1x1 head", (2 * ch * cw * o.cin() * o.cout()) as f64);
        Ok(self.out.forward(&cur, ch, cw, Activation::None).0)
    }
}
