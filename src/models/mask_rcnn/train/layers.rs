//! The trainable layers of the training graph, as burn modules that load from and export to
//! torchvision's key names: convolutions (optionally followed by a `FrozenBatchNorm2d`, applied
//! as a per-channel scale on the weights and a bias), fully connected layers and the 2x2
//! up-convolution. On the autodiff CPU device the stride-1 convolutions and the up-convolution
//! run on the engine's training operations ([`crate::autodiff`]); strided ones on burn's.

use crate::autodiff;
use crate::models::tensor_io::{from_host, to_host};
use crate::weights::{HostTensor, NamedTensors};
use anyhow::{Result, bail};
use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// `FrozenBatchNorm2d`'s epsilon in torchvision's ResNets.
pub const FROZEN_BN_EPS: f32 = 1e-5;

/// Where a layer's tensors come from: a state_dict, its keys checked for presence and shape.
pub struct Source<'a> {
    pub named: &'a NamedTensors,
    pub device: Device,
    /// Whether the loaded parameters are trained (frozen ones take no gradient).
    pub trainable: bool,
}

impl Source<'_> {
    pub fn tensor(&self, key: &str, shape: &[usize]) -> Result<&HostTensor> {
        let Some(t) = self.named.get(key) else {
            bail!("{}: missing tensor {key}", self.named.source);
        };
        if t.shape != shape {
            bail!(
                "{}: {key} has shape {:?}, expected {shape:?}",
                self.named.source,
                t.shape
            );
        }
        Ok(t)
    }

    fn param<const D: usize>(&self, key: &str, shape: &[usize]) -> Result<Param<Tensor<D>>> {
        let t = from_host::<D>(self.tensor(key, shape)?, &self.device);
        Ok(Param::from_tensor(t).set_require_grad(self.trainable))
    }

    /// A frozen BatchNorm's scale and shift: `w / sqrt(var + eps)`, `b - mean * scale`.
    fn frozen_bn(&self, prefix: &str, c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let get = |n: &str| self.tensor(&format!("{prefix}.{n}"), &[c]).map(|t| &t.data);
        let (w, b, m, v) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let scale: Vec<f32> = (0..c)
            .map(|i| w[i] * (v[i] + FROZEN_BN_EPS).sqrt().recip())
            .collect();
        let shift = (0..c).map(|i| b[i] - m[i] * scale[i]).collect();
        Ok((scale, shift))
    }
}

/// What an export reads from each parameter.
pub enum Readout<'a> {
    /// The values (a checkpoint).
    Values,
    /// The gradients of a backward pass (parameters without one are left out).
    Grads(&'a Gradients),
}

fn export_param<const D: usize>(
    out: &mut NamedTensors,
    key: String,
    p: &Param<Tensor<D>>,
    r: &Readout,
) {
    match r {
        Readout::Values => out.insert(key, to_host(p.val())),
        Readout::Grads(g) => {
            if let Some(t) = p.val().grad(g) {
                out.insert(key, to_host(t));
            }
        }
    }
}

/// How a backbone's BatchNorms behave in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `FrozenBatchNorm2d`: the checkpoint's statistics, a fixed affine (fine-tuning).
    Frozen,
    /// `BatchNorm2d` in training mode: batch statistics, trained scale and shift, running
    /// averages (torchvision's choice without pretrained weights; the whole body trains).
    Batch,
}

/// A 2-d convolution `[cout, cin, k, k]` with stride and symmetric padding, a bias or a frozen
/// BatchNorm after it (keys `{prefix}.weight` and `{prefix}.bias`, or the BatchNorm's under
/// `bn_prefix`, exported unchanged).
#[derive(Module, Debug)]
pub struct Conv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// The frozen BatchNorm's per-channel scale and shift.
    pub bn: Option<(Tensor<1>, Tensor<1>)>,
    /// A BatchNorm trained with batch statistics (instead of a frozen one).
    pub norm: Option<BatchNorm>,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    /// A convolution with a bias (`{prefix}.weight`, `{prefix}.bias`).
    pub fn load(
        s: &Source,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: s.param(&format!("{prefix}.weight"), &[cout, cin, k, k])?,
            bias: Some(s.param(&format!("{prefix}.bias"), &[cout])?),
            bn: None,
            norm: None,
            stride,
            pad: k / 2,
        })
    }

    /// A bias-free convolution followed by the BatchNorm at `bn_prefix`, frozen or trained
    /// with batch statistics (momentum 0.1, eps 1e-5 as `nn.BatchNorm2d`).
    #[allow(clippy::too_many_arguments)]
    pub fn load_with_norm(
        s: &Source,
        prefix: &str,
        bn_prefix: &str,
        norm: Norm,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let (frozen, trained) = match norm {
            Norm::Frozen => {
                let (scale, shift) = s.frozen_bn(bn_prefix, cout)?;
                let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [cout]), &s.device);
                (Some((t(scale), t(shift))), None)
            }
            Norm::Batch => {
                let mut bn = BatchNormConfig::new(cout)
                    .with_epsilon(FROZEN_BN_EPS as f64)
                    .with_momentum(0.1)
                    .init(&s.device);
                bn.gamma = s.param(&format!("{bn_prefix}.weight"), &[cout])?;
                bn.beta = s.param(&format!("{bn_prefix}.bias"), &[cout])?;
                let state = |n: &str| -> Result<RunningState<Tensor<1>>> {
                    let t = s.tensor(&format!("{bn_prefix}.{n}"), &[cout])?;
                    Ok(RunningState::new(from_host::<1>(t, &s.device)))
                };
                bn.running_mean = state("running_mean")?;
                bn.running_var = state("running_var")?;
                (None, Some(bn))
            }
        };
        Ok(Self {
            weight: s.param(&format!("{prefix}.weight"), &[cout, cin, k, k])?,
            bias: None,
            bn: frozen,
            norm: trained,
            stride,
            pad: k / 2,
        })
    }

    /// The convolution's tensors, and a trained BatchNorm's under `bn_prefix`.
    pub fn export_with_norm(
        &self,
        prefix: &str,
        bn_prefix: &str,
        out: &mut NamedTensors,
        r: &Readout,
    ) {
        self.export(prefix, out, r);
        if let Some(bn) = &self.norm {
            export_param(out, format!("{bn_prefix}.weight"), &bn.gamma, r);
            export_param(out, format!("{bn_prefix}.bias"), &bn.beta, r);
            if let Readout::Values = r {
                out.insert(
                    format!("{bn_prefix}.running_mean"),
                    to_host(bn.running_mean.value_sync()),
                );
                out.insert(
                    format!("{bn_prefix}.running_var"),
                    to_host(bn.running_var.value_sync()),
                );
            }
        }
    }

    pub fn export(&self, prefix: &str, out: &mut NamedTensors, r: &Readout) {
        export_param(out, format!("{prefix}.weight"), &self.weight, r);
        if let Some(b) = &self.bias {
            export_param(out, format!("{prefix}.bias"), b, r);
        }
    }

    /// The convolution, its normalisation and, with `relu`, a ReLU.
    pub fn forward_act(&self, x: Tensor<4>, relu: bool) -> Tensor<4> {
        let y = self.forward(x);
        match &self.norm {
            Some(bn) => batch_norm(bn, y, relu),
            None if relu => burn::tensor::activation::relu(y),
            None => y,
        }
    }

    /// The convolution with its bias or frozen BatchNorm (a trained BatchNorm is applied by
    /// [`forward_act`](Self::forward_act)).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut w = self.weight.val();
        let [cout, _, k, _] = w.dims();
        let bias = match (&self.bias, &self.bn) {
            (Some(b), _) => b.val(),
            (None, Some((scale, shift))) => {
                w = w * scale.clone().reshape([cout, 1, 1, 1]);
                shift.clone()
            }
            (None, None) => Tensor::zeros([cout], &x.device()),
        };
        if self.stride == 1 && k % 2 == 1 && autodiff::applies(&x) && autodiff::applies(&w) {
            return autodiff::conv2d(x, w, bias, self.pad);
        }
        let p = self.pad;
        conv2d(
            x,
            w,
            Some(bias),
            ConvOptions {
                stride: [self.stride; 2],
                padding: [(p, p); 2],
                dilation: [1, 1],
                groups: 1,
            },
        )
    }
}

/// BatchNorm with the batch's statistics (ReLU fused when asked) on the engine's training
/// operation; the running statistics follow `nn.BatchNorm2d` (momentum, unbiased variance).
fn batch_norm(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    let device = x.device();
    let [n, _, h, w] = x.dims();
    let count = (n * h * w) as f32;
    let (y, stats) = autodiff::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, relu);
    autodiff::update_running_stats(bn, &stats, Some(count), &device);
    y
}

/// A fully connected layer with PyTorch's `[out, in]` weights.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    pub fn load(s: &Source, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            weight: s.param(&format!("{prefix}.weight"), &[cout, cin])?,
            bias: s.param(&format!("{prefix}.bias"), &[cout])?,
        })
    }

    pub fn export(&self, prefix: &str, out: &mut NamedTensors, r: &Readout) {
        export_param(out, format!("{prefix}.weight"), &self.weight, r);
        export_param(out, format!("{prefix}.bias"), &self.bias, r);
    }

    /// `x [n, in]` -> `[n, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let out = self.bias.dims()[0];
        x.matmul(self.weight.val().transpose()) + self.bias.val().reshape([1, out])
    }
}

/// The mask predictor's 2x2 stride-2 transposed convolution (`[cin, cout, 2, 2]`).
#[derive(Module, Debug)]
pub struct UpConv {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
}

impl UpConv {
    pub fn load(s: &Source, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            weight: s.param(&format!("{prefix}.weight"), &[cin, cout, 2, 2])?,
            bias: s.param(&format!("{prefix}.bias"), &[cout])?,
        })
    }

    pub fn export(&self, prefix: &str, out: &mut NamedTensors, r: &Readout) {
        export_param(out, format!("{prefix}.weight"), &self.weight, r);
        export_param(out, format!("{prefix}.bias"), &self.bias, r);
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if autodiff::applies(&x) {
            return autodiff::conv_transpose2x2(x, self.weight.val(), self.bias.val());
        }
        burn::tensor::module::conv_transpose2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            burn::tensor::ops::ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1),
        )
    }
}
