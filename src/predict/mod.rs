//! Semantic prediction: preprocess (normalise, pad to the network stride) -> U-Net (BatchNorm
//! folded) -> postprocess (crop, argmax) -> label map at the original size, on the engine the
//! caller chose: segrs' host engine (`crate::ops`, the CPU) or burn on a device.

use crate::data::image_io::{LabelMap, Picture};
use crate::data::preprocess::{Normalize, pad_chw, round_up};
use crate::models::tensor_io::tensor4;
use crate::models::unet::UNet;
use crate::models::unet::host::HostUNet;
use crate::ops::Precision;
use anyhow::Result;
use burn::prelude::*;

mod tiled;
pub use tiled::{Tiling, argmax_row};

/// Which engine runs a model's forward pass.
#[derive(Clone, Debug)]
pub enum Engine {
    /// segrs' own kernels on the CPU (`crate::ops`: Winograd, fused epilogues, folded
    /// BatchNorm), computing in f32 or bf16; the fast path.
    Host(Precision),
    /// burn's tensors on a device (flex on the CPU, or Vulkan): the training graph's ops.
    Burn(Device),
}

pub struct SemanticPredictor {
    /// Eval-mode network with BatchNorm folded into the convolutions (the burn form, used by
    /// [`padded_logits`](Self::padded_logits) and the burn engine).
    pub model: UNet,
    pub normalize: Normalize,
    /// The device of `model`.
    pub device: Device,
    /// The host network, when the host engine was chosen.
    host: Option<HostUNet>,
}

impl SemanticPredictor {
    /// Takes a network in any mode and prepares its inference form on `engine`.
    pub fn new(model: &UNet, normalize: Normalize, engine: Engine) -> Result<Self> {
        Ok(match engine {
            Engine::Host(precision) => Self {
                host: Some(HostUNet::from_model_with(model, precision)?),
                ..Self::burn(model, normalize, Device::flex())
            },
            Engine::Burn(device) => Self::burn(model, normalize, device),
        })
    }

    /// On burn's `device` (what validation during training uses: the same graph as training).
    pub fn burn(model: &UNet, normalize: Normalize, device: Device) -> Self {
        Self {
            model: model.valid().fold_batchnorm(),
            normalize,
            device,
            host: None,
        }
    }

    pub fn in_channels(&self) -> usize {
        self.model.config.in_channels
    }

    /// Logits `[1, C, H', W']` for a picture padded to the network stride, and (H', W').
    pub fn padded_logits(&self, pic: &Picture) -> (Tensor<4>, usize, usize) {
        let pic = pic.with_channels(self.in_channels());
        let s = self.model.config.stride();
        let (ph, pw) = (round_up(pic.height, s), round_up(pic.width, s));
        let chw = self.normalize.to_chw(&pic);
        let padded = pad_chw(&chw, pic.channels, pic.height, pic.width, ph, pw, 0.0);
        let x = tensor4(padded, [1, pic.channels, ph, pw], &self.device);
        (self.model.forward(x), ph, pw)
    }

    /// Per-pixel class probabilities `[C, H, W]` (softmax) at the picture's size.
    pub fn probabilities(&self, pic: &Picture) -> Vec<f32> {
        let (logits, _, _) = self.padded_logits(pic);
        let [_, c, _, _] = logits.dims();
        let p = burn::tensor::activation::softmax(logits, 1).slice([
            0..1,
            0..c,
            0..pic.height,
            0..pic.width,
        ]);
        crate::models::tensor_io::to_vec(p)
    }

    /// The class of every pixel, at the picture's size.
    pub fn predict(&self, pic: &Picture) -> LabelMap {
        if let Some(engine) = &self.host {
            let logits = self
                .host_logits(pic)
                .expect("input padded to the network stride");
            let (h, w) = (pic.height, pic.width);
            return argmax_host(&logits, engine.num_classes, h, w, h, w);
        }
        let (logits, _, _) = self.padded_logits(pic);
        argmax_labels(logits, pic.height, pic.width)
    }
}

impl SemanticPredictor {
    /// The logits `[C, H, W]` of the whole picture at once on the host engine (padded to the
    /// network stride, cropped back).
    pub fn host_logits(&self, pic: &Picture) -> Result<Vec<f32>> {
        let Some(engine) = &self.host else {
            anyhow::bail!("host logits need the host engine");
        };
        let pic = pic.with_channels(self.in_channels());
        let s = self.model.config.stride();
        let (h, w) = (pic.height, pic.width);
        let (ph, pw) = (round_up(h, s), round_up(w, s));
        let chw = pad_chw(
            &self.normalize.to_chw(&pic),
            pic.channels,
            h,
            w,
            ph,
            pw,
            0.0,
        );
        let padded = engine.forward(&chw, ph, pw)?;
        let k = engine.num_classes;
        let mut out = Vec::with_capacity(k * h * w);
        for c in 0..k {
            for y in 0..h {
                out.extend_from_slice(&padded[(c * ph + y) * pw..(c * ph + y) * pw + w]);
            }
        }
        Ok(out)
    }
}

/// Arg-max over classes of the top-left `h x w` window of host logits `[C, H', W']` (ties go to
/// the lower class, as `argmax` does).
pub fn argmax_host(logits: &[f32], c: usize, ph: usize, pw: usize, h: usize, w: usize) -> LabelMap {
    let plane = ph * pw;
    let mut data = Vec::with_capacity(h * w);
    for y in 0..h {
        for x in 0..w {
            let i = y * pw + x;
            let mut best = 0;
            let mut bv = logits[i];
            for k in 1..c {
                let v = logits[k * plane + i];
                if v > bv {
                    bv = v;
                    best = k;
                }
            }
            data.push(best as u32);
        }
    }
    LabelMap {
        width: w,
        height: h,
        data,
    }
}

/// Arg-max over classes of the top-left `h x w` window of `[1, C, H', W']` logits.
pub fn argmax_labels(logits: Tensor<4>, h: usize, w: usize) -> LabelMap {
    let [_, c, _, _] = logits.dims();
    let idx = logits.slice([0..1, 0..c, 0..h, 0..w]).argmax(1);
    let data: Vec<u32> = idx
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("argmax readback")
        .into_iter()
        .map(|v| v as u32)
        .collect();
    LabelMap {
        width: w,
        height: h,
        data,
    }
}
