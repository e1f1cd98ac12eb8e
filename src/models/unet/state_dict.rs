//! PyTorch-compatible weights: a U-Net to and from a name -> tensor map with the key names of the
//! reference PyTorch class (`enc1.block.0.weight`, `enc1.block.1.running_mean`, `up4.weight`,
//! `out_conv.bias`, ...).

use super::config::{UNetConfig, Upsampling};
use super::double_conv::DoubleConv;
use super::unet::UNet;
use super::up_conv::UpConv;
use crate::models::tensor_io::{from_host, to_host};
use crate::weights::{HostTensor, KeyCheck, NamedTensors};
use anyhow::{Result, bail};
use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::*;
use std::collections::BTreeMap;

/// PyTorch key prefix of each part of the network.
fn prefixes(c: &UNetConfig) -> Vec<String> {
    let mut v: Vec<String> = (1..=c.depth).map(|i| format!("enc{i}")).collect();
    v.push("bottleneck".into());
    v
}

fn block_keys(
    batch_norm: bool,
) -> (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
) {
    if batch_norm {
        ("block.0", Some("block.1"), "block.3", Some("block.4"))
    } else {
        ("block.0", None, "block.2", None)
    }
}

// ---------- export ----------

fn put_conv(
    out: &mut BTreeMap<String, HostTensor>,
    key: &str,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) {
    out.insert(format!("{key}.weight"), to_host(weight));
    if let Some(b) = bias {
        out.insert(format!("{key}.bias"), to_host(b));
    }
}

fn put_bn(out: &mut BTreeMap<String, HostTensor>, key: &str, bn: &BatchNorm) {
    out.insert(format!("{key}.weight"), to_host(bn.gamma.val()));
    out.insert(format!("{key}.bias"), to_host(bn.beta.val()));
    out.insert(
        format!("{key}.running_mean"),
        to_host(bn.running_mean.value()),
    );
    out.insert(
        format!("{key}.running_var"),
        to_host(bn.running_var.value()),
    );
    out.insert(
        format!("{key}.num_batches_tracked"),
        HostTensor::new(vec![], vec![0.0]),
    );
}

fn put_double(
    out: &mut BTreeMap<String, HostTensor>,
    prefix: &str,
    d: &DoubleConv,
    batch_norm: bool,
) {
    let (c1, b1, c2, b2) = block_keys(batch_norm);
    put_conv(
        out,
        &format!("{prefix}.{c1}"),
        d.conv1.weight.val(),
        d.conv1.bias.as_ref().map(|b| b.val()),
    );
    if let (Some(k), Some(bn)) = (b1, &d.bn1) {
        put_bn(out, &format!("{prefix}.{k}"), bn);
    }
    put_conv(
        out,
        &format!("{prefix}.{c2}"),
        d.conv2.weight.val(),
        d.conv2.bias.as_ref().map(|b| b.val()),
    );
    if let (Some(k), Some(bn)) = (b2, &d.bn2) {
        put_bn(out, &format!("{prefix}.{k}"), bn);
    }
}

/// The network's weights under PyTorch key names.
pub fn export(model: &UNet) -> BTreeMap<String, HostTensor> {
    let c = &model.config;
    let mut out = BTreeMap::new();
    let names = prefixes(c);
    for (i, enc) in model.enc.iter().enumerate() {
        put_double(&mut out, &names[i], enc, c.batch_norm);
    }
    put_double(&mut out, "bottleneck", &model.bottleneck, c.batch_norm);
    for i in 0..c.depth {
        let up = &model.up[i];
        let key = format!("up{}", i + 1);
        if let Some(t) = &up.transpose {
            put_conv(
                &mut out,
                &key,
                t.weight.val(),
                t.bias.as_ref().map(|b| b.val()),
            );
        }
        if let Some(conv) = &up.conv1x1 {
            put_conv(
                &mut out,
                &format!("{key}.1"),
                conv.weight.val(),
                conv.bias.as_ref().map(|b| b.val()),
            );
        }
        put_double(
            &mut out,
            &format!("dec{}", i + 1),
            &model.dec[i],
            c.batch_norm,
        );
    }
    put_conv(
        &mut out,
        "out_conv",
        model.out_conv.weight.val(),
        model.out_conv.bias.as_ref().map(|b| b.val()),
    );
    out
}

// ---------- import ----------

struct Loader<'a> {
    src: &'a NamedTensors,
    check: KeyCheck,
    device: Device,
}

impl Loader<'_> {
    fn param<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Option<Param<Tensor<D>>> {
        let t = self.check.take(self.src, key, &shape)?;
        Some(Param::from_tensor(from_host::<D>(t, &self.device)))
    }

    fn conv(&mut self, key: &str, conv: &mut Conv2d) {
        let shape: [usize; 4] = conv.weight.shape().dims();
        if let Some(w) = self.param(&format!("{key}.weight"), shape) {
            conv.weight = w;
        }
        if conv.bias.is_some()
            && let Some(b) = self.param(&format!("{key}.bias"), [shape[0]])
        {
            conv.bias = Some(b);
        }
    }

    fn conv_t(&mut self, key: &str, conv: &mut ConvTranspose2d) {
        let shape: [usize; 4] = conv.weight.shape().dims();
        if let Some(w) = self.param(&format!("{key}.weight"), shape) {
            conv.weight = w;
        }
        if conv.bias.is_some()
            && let Some(b) = self.param(&format!("{key}.bias"), [shape[1]])
        {
            conv.bias = Some(b);
        }
    }

    fn bn(&mut self, key: &str, bn: &mut BatchNorm) {
        let [n] = bn.gamma.shape().dims();
        if let Some(g) = self.param(&format!("{key}.weight"), [n]) {
            bn.gamma = g;
        }
        if let Some(b) = self.param(&format!("{key}.bias"), [n]) {
            bn.beta = b;
        }
        for (name, is_mean) in [("running_mean", true), ("running_var", false)] {
            let k = format!("{key}.{name}");
            if let Some(t) = self.check.take(self.src, &k, &[n]) {
                let state = RunningState::new(from_host::<1>(t, &self.device));
                if is_mean {
                    bn.running_mean = state;
                } else {
                    bn.running_var = state;
                }
            }
        }
        self.check.used.insert(format!("{key}.num_batches_tracked"));
    }

    fn double(&mut self, prefix: &str, d: &mut DoubleConv, batch_norm: bool) {
        let (c1, b1, c2, b2) = block_keys(batch_norm);
        self.conv(&format!("{prefix}.{c1}"), &mut d.conv1);
        if let (Some(k), Some(bn)) = (b1, d.bn1.as_mut()) {
            self.bn(&format!("{prefix}.{k}"), bn);
        }
        self.conv(&format!("{prefix}.{c2}"), &mut d.conv2);
        if let (Some(k), Some(bn)) = (b2, d.bn2.as_mut()) {
            self.bn(&format!("{prefix}.{k}"), bn);
        }
    }

    fn up(&mut self, key: &str, up: &mut UpConv) {
        if let Some(t) = up.transpose.as_mut() {
            self.conv_t(key, t);
        }
        if let Some(c) = up.conv1x1.as_mut() {
            self.conv(&format!("{key}.1"), c);
        }
    }
}

/// Builds a U-Net of `config` from PyTorch-named tensors; every missing or misshapen key is
/// reported together.
pub fn import(config: &UNetConfig, src: &NamedTensors, device: &Device) -> Result<UNet> {
    config.validate()?;
    let mut model = UNet::new(config, device);
    let mut l = Loader {
        src,
        check: KeyCheck::default(),
        device: device.clone(),
    };
    let names = prefixes(config);
    for (i, enc) in model.enc.iter_mut().enumerate() {
        l.double(&names[i], enc, config.batch_norm);
    }
    l.double("bottleneck", &mut model.bottleneck, config.batch_norm);
    for i in 0..config.depth {
        l.up(&format!("up{}", i + 1), &mut model.up[i]);
        l.double(
            &format!("dec{}", i + 1),
            &mut model.dec[i],
            config.batch_norm,
        );
    }
    l.conv("out_conv", &mut model.out_conv);
    let unused: Vec<&String> = src
        .tensors
        .keys()
        .filter(|k| !l.check.used.contains(*k))
        .collect();
    l.check.finish(src, "U-Net")?;
    if !unused.is_empty() {
        let shown: Vec<&&String> = unused.iter().take(6).collect();
        bail!(
            "{}: {} key(s) do not belong to a U-Net of this configuration (depth {}, {} upsampling, BatchNorm {}), e.g. {:?}",
            src.source,
            unused.len(),
            config.depth,
            match config.upsampling {
                Upsampling::Transpose => "transposed-conv",
                Upsampling::Bilinear => "bilinear",
            },
            if config.batch_norm { "on" } else { "off" },
            shown
        );
    }
    Ok(model)
}

/// Reads the architecture from the keys and shapes of a PyTorch state_dict.
pub fn infer_config(src: &NamedTensors) -> Result<UNetConfig> {
    let depth = (1..=8)
        .take_while(|i| src.tensors.contains_key(&format!("enc{i}.block.0.weight")))
        .count();
    let first = src.get("enc1.block.0.weight");
    let out = src.get("out_conv.weight");
    let (Some(first), Some(out)) = (first, out) else {
        bail!(
            "{}: not a U-Net state_dict (no enc1.block.0.weight / out_conv.weight; first keys: {:?})",
            src.source,
            src.tensors.keys().take(5).collect::<Vec<_>>()
        );
    };
    if first.shape.len() != 4 || out.shape.len() != 4 {
        bail!(
            "{}: enc1.block.0.weight / out_conv.weight are not 4-D convolution weights",
            src.source
        );
    }
    let batch_norm = src.tensors.contains_key("enc1.block.1.running_mean");
    let upsampling = if src.tensors.contains_key("up1.weight") {
        Upsampling::Transpose
    } else {
        Upsampling::Bilinear
    };
    Ok(UNetConfig {
        in_channels: first.shape[1],
        num_classes: out.shape[0],
        base_width: first.shape[0],
        depth,
        upsampling,
        batch_norm,
    })
}

/// Initial weights drawn as PyTorch initialises these layers (`kaiming_uniform_(a=sqrt(5))`:
/// weights and biases uniform in +-1/sqrt(fan_in), fan_in = weight.shape[1] * kernel area;
/// BatchNorm weight 1, bias 0, running mean 0, variance 1), from a generator seeded with `seed`
/// alone, so a run's start does not depend on anything else drawing random numbers.
pub fn seeded_init(config: &UNetConfig, seed: u64) -> NamedTensors {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let template = export(&UNet::new(config, &Device::flex()));
    let mut out = NamedTensors {
        source: format!("seeded initialisation (seed {seed})"),
        ..Default::default()
    };
    let fan_in = |k: &str| -> usize {
        let wkey = format!("{}.weight", k.rsplit_once('.').map(|p| p.0).unwrap_or(k));
        template
            .get(&wkey)
            .map(|t| t.shape[1..].iter().product())
            .unwrap_or(1)
    };
    for (k, t) in &template {
        let prefix = k.rsplit_once('.').map(|p| p.0).unwrap_or("");
        let is_bn = template.contains_key(&format!("{prefix}.running_mean"));
        let n = t.data.len();
        let data: Vec<f32> = if k.ends_with("running_var") {
            vec![1.0; n]
        } else if k.ends_with("running_mean") || k.ends_with("num_batches_tracked") {
            vec![0.0; n]
        } else if is_bn {
            vec![if k.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            let bound = 1.0 / (fan_in(k) as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        out.insert(k.clone(), HostTensor::new(t.shape.clone(), data));
    }
    out
}
