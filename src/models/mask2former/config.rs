//! A Mask2Former model folder as users download it from the Hugging Face hub:
//! `config.json` (the architecture and the label names), `preprocessor_config.json` (resize,
//! normalisation) and the weights (`model.safetensors`, sharded safetensors with
//! `model.safetensors.index.json`, or `pytorch_model.bin` and its shards).

use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The Swin backbone's architecture (`backbone_config`).
#[derive(Clone, Debug)]
pub struct SwinConfig {
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub patch_size: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f32,
}

/// The backbone a config names.
#[derive(Clone, Debug)]
pub enum BackboneConfig {
    Swin(SwinConfig),
    /// A bottleneck ResNet (`ResNetConfig`, stride on the 3x3 convolutions): the stages'
    /// output widths.
    ResNet {
        hidden_sizes: Vec<usize>,
    },
}

impl BackboneConfig {
    /// The four feature maps' channels.
    pub fn channels(&self) -> Vec<usize> {
        match self {
            Self::Swin(c) => (0..c.depths.len()).map(|s| c.embed_dim << s).collect(),
            Self::ResNet { hidden_sizes } => hidden_sizes.clone(),
        }
    }
}

/// `Mask2FormerConfig`: the pixel decoder's and the transformer decoder's sizes.
#[derive(Clone, Debug)]
pub struct Mask2FormerConfig {
    pub backbone: BackboneConfig,
    pub feature_size: usize,
    pub mask_feature_size: usize,
    pub hidden_dim: usize,
    pub encoder_feedforward_dim: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub num_attention_heads: usize,
    pub dim_feedforward: usize,
    pub pre_norm: bool,
    pub enforce_input_projection: bool,
    pub common_stride: usize,
    pub num_queries: usize,
    pub feature_strides: Vec<usize>,
    /// Label names by class index (`id2label`); the model predicts one more, "no object".
    pub labels: Vec<String>,
}

/// `Mask2FormerImageProcessor`'s settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub shortest_edge: usize,
    /// The long side's limit (None: no limit).
    pub longest_edge: Option<usize>,
    pub size_divisor: usize,
    /// Per channel, on the 0-1 scale.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            shortest_edge: 800,
            longest_edge: Some(1333),
            size_divisor: 32,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

fn usize_of(v: &Value, key: &str, default: usize, file: &Path) -> Result<usize> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_u64()
            .map(|n| n as usize)
            .with_context(|| format!("{}: \"{key}\" is not a whole number", file.display())),
    }
}

fn list_of(v: &Value, key: &str, default: &[usize], file: &Path) -> Result<Vec<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default.to_vec()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!(
                    "{}: \"{key}\" is not a list of whole numbers",
                    file.display()
                )
            }),
        Some(_) => bail!("{}: \"{key}\" is not a list", file.display()),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", path.display()))
}

fn swin_config(b: &Value, path: &Path) -> Result<SwinConfig> {
    if b.get("use_absolute_embeddings").and_then(Value::as_bool) == Some(true) {
        bail!(
            "{}: Swin with absolute position embeddings is not supported",
            path.display()
        );
    }
    if let Some(act) = b.get("hidden_act").and_then(Value::as_str)
        && act != "gelu"
    {
        bail!(
            "{}: Swin activation \"{act}\" is not supported (gelu only)",
            path.display()
        );
    }
    let c = SwinConfig {
        embed_dim: usize_of(b, "embed_dim", 96, path)?,
        depths: list_of(b, "depths", &[2, 2, 18, 2], path)?,
        num_heads: list_of(b, "num_heads", &[3, 6, 12, 24], path)?,
        window_size: usize_of(b, "window_size", 7, path)?,
        patch_size: usize_of(b, "patch_size", 4, path)?,
        mlp_ratio: b.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0),
        layer_norm_eps: b
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32,
    };
    if c.depths.len() != 4 || c.num_heads.len() != 4 {
        bail!(
            "{}: Swin needs 4 stages (depths and num_heads)",
            path.display()
        );
    }
    Ok(c)
}

fn resnet_config(b: &Value, path: &Path) -> Result<BackboneConfig> {
    let flag = |k: &str| b.get(k).and_then(Value::as_bool).unwrap_or(false);
    let layer = b
        .get("layer_type")
        .and_then(Value::as_str)
        .unwrap_or("bottleneck");
    let act = b
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("relu");
    if layer != "bottleneck"
        || act != "relu"
        || flag("downsample_in_bottleneck")
        || flag("downsample_in_first_stage")
    {
        bail!(
            "{}: ResNet backbones are supported with bottleneck blocks, ReLU and the stride on the 3x3 convolutions (ResNet-50/101 as published)",
            path.display()
        );
    }
    let hidden_sizes = list_of(b, "hidden_sizes", &[256, 512, 1024, 2048], path)?;
    if hidden_sizes.len() != 4 {
        bail!("{}: ResNet needs 4 stages (hidden_sizes)", path.display());
    }
    Ok(BackboneConfig::ResNet { hidden_sizes })
}

impl Mask2FormerConfig {
    /// Reads `config.json`; a model type other than Mask2Former, or a backbone other than Swin
    /// or a bottleneck ResNet, is an error naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let kind = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if kind != "mask2former" {
            bail!(
                "{}: model_type is \"{kind}\"; segrs runs Mask2Former folders (model_type \"mask2former\")",
                path.display()
            );
        }
        if v.get("use_timm_backbone").and_then(Value::as_bool) == Some(true) {
            bail!(
                "{}: timm backbones are not supported (Swin and ResNet from transformers)",
                path.display()
            );
        }
        let b = v.get("backbone_config").cloned().unwrap_or(Value::Null);
        let bkind = b
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("swin");
        let backbone = match bkind {
            "swin" => BackboneConfig::Swin(swin_config(&b, path)?),
            "resnet" => resnet_config(&b, path)?,
            _ => bail!(
                "{}: backbone \"{bkind}\" is not supported; segrs' Mask2Former runs Swin and bottleneck ResNet backbones",
                path.display()
            ),
        };
        if let Some(Value::Array(outs)) = b.get("out_features")
            && outs.len() != 4
        {
            bail!(
                "{}: the backbone must give all 4 stages (out_features)",
                path.display()
            );
        }
        if let Some(act) = v.get("activation_function").and_then(Value::as_str)
            && act != "relu"
        {
            bail!(
                "{}: decoder activation \"{act}\" is not supported (relu only)",
                path.display()
            );
        }
        let mut labels = Vec::new();
        if let Some(Value::Object(m)) = v.get("id2label") {
            let mut pairs: Vec<(usize, String)> = m
                .iter()
                .map(|(k, name)| {
                    let i = k.parse::<usize>().with_context(|| {
                        format!("{}: id2label key \"{k}\" is not an index", path.display())
                    })?;
                    Ok((i, name.as_str().unwrap_or_default().to_string()))
                })
                .collect::<Result<_>>()?;
            pairs.sort();
            for (n, (i, _)) in pairs.iter().enumerate() {
                if *i != n {
                    bail!("{}: id2label skips index {n}", path.display());
                }
            }
            labels = pairs.into_iter().map(|(_, s)| s).collect();
        }
        let cfg = Self {
            backbone,
            feature_size: usize_of(&v, "feature_size", 256, path)?,
            mask_feature_size: usize_of(&v, "mask_feature_size", 256, path)?,
            hidden_dim: usize_of(&v, "hidden_dim", 256, path)?,
            encoder_feedforward_dim: usize_of(&v, "encoder_feedforward_dim", 1024, path)?,
            encoder_layers: usize_of(&v, "encoder_layers", 6, path)?,
            decoder_layers: usize_of(&v, "decoder_layers", 10, path)?,
            num_attention_heads: usize_of(&v, "num_attention_heads", 8, path)?,
            dim_feedforward: usize_of(&v, "dim_feedforward", 2048, path)?,
            pre_norm: v.get("pre_norm").and_then(Value::as_bool).unwrap_or(false),
            enforce_input_projection: v
                .get("enforce_input_projection")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            common_stride: usize_of(&v, "common_stride", 4, path)?,
            num_queries: usize_of(&v, "num_queries", 100, path)?,
            feature_strides: list_of(&v, "feature_strides", &[4, 8, 16, 32], path)?,
            labels,
        };
        if cfg.feature_strides.len() != 4 {
            bail!("{}: feature_strides needs 4 entries", path.display());
        }
        if cfg.decoder_layers == 0
            || !cfg.feature_size.is_multiple_of(32)
            || cfg.num_attention_heads == 0
        {
            bail!(
                "{}: decoder_layers must be at least 1 and feature_size a multiple of 32 (GroupNorm)",
                path.display()
            );
        }
        Ok(cfg)
    }
}

impl Preprocess {
    /// Reads `preprocessor_config.json` (sizes as `{"shortest_edge", "longest_edge"}`, or the
    /// older `size` number with `max_size`, 1333 by default, and `size_divisibility`; means
    /// and deviations on the 0-1 or the 0-255 scale); a missing file gives the processor's
    /// defaults.
    pub fn read(path: &Path) -> Result<Self> {
        let mut p = Self::default();
        if !path.exists() {
            return Ok(p);
        }
        let v = read_json(path)?;
        if let Some(r) = v.get("resample").and_then(Value::as_u64)
            && r != 2
        {
            bail!(
                "{}: resample {r} is not supported (2, bilinear, only)",
                path.display()
            );
        }
        match v.get("size") {
            Some(Value::Object(m)) => {
                if let Some(s) = m.get("shortest_edge").and_then(Value::as_u64) {
                    p.shortest_edge = s as usize;
                    p.longest_edge = m
                        .get("longest_edge")
                        .and_then(Value::as_u64)
                        .map(|x| x as usize);
                } else {
                    bail!("{}: size needs \"shortest_edge\"", path.display());
                }
            }
            Some(Value::Number(n)) => {
                // older processors: a short side, the long side's limit in `max_size` (1333)
                p.shortest_edge = n.as_u64().unwrap_or(800) as usize;
                p.longest_edge = Some(
                    v.get("max_size")
                        .and_then(Value::as_u64)
                        .map_or(1333, |x| x as usize),
                );
            }
            _ => {}
        }
        // `size_divisibility` in older processors
        let older = usize_of(&v, "size_divisibility", 32, path)?;
        p.size_divisor = usize_of(&v, "size_divisor", older, path)?;
        let three = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().with_context(|| {
                            format!("{}: \"{key}\" holds a non-number", path.display())
                        })? as f32;
                    }
                    // 0-255 scale (older processors) -> 0-1
                    if out.iter().any(|&x| x > 1.5) {
                        out.iter_mut().for_each(|x| *x /= 255.0);
                    }
                    Ok(out)
                }
                Some(_) => bail!("{}: \"{key}\" must be a list of 3 numbers", path.display()),
            }
        };
        p.mean = three("image_mean", p.mean)?;
        p.std = three("image_std", p.std)?;
        if p.shortest_edge == 0 || p.size_divisor == 0 || p.std.contains(&0.0) {
            bail!("{}: sizes and deviations must be positive", path.display());
        }
        Ok(p)
    }

    /// The processor's resized size of an `(h, w)` image: short side to `shortest_edge`
    /// unless the long side would pass `longest_edge` (`get_size_with_aspect_ratio`), then
    /// each side rounded up to `size_divisor`.
    pub fn resized_size(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let mut size = self.shortest_edge as f64;
        let (short, long) = (h.min(w) as f64, h.max(w) as f64);
        let mut raw = None;
        if let Some(max) = self.longest_edge
            && long / short * size > max as f64
        {
            let r = max as f64 * short / long;
            raw = Some(r);
            size = r.round();
        }
        let size_i = size as usize;
        let (oh, ow) = if (h <= w && h == size_i) || (w <= h && w == size_i) {
            (h, w)
        } else if w < h {
            let oh = (raw.unwrap_or(size) * h as f64 / w as f64) as usize;
            (oh, size_i)
        } else {
            let ow = (raw.unwrap_or(size) * w as f64 / h as f64) as usize;
            (size_i, ow)
        };
        let d = self.size_divisor;
        (oh.div_ceil(d) * d, ow.div_ceil(d) * d)
    }
}

/// The files of a model folder.
pub struct ModelFolder {
    pub config: Mask2FormerConfig,
    pub preprocess: Preprocess,
    pub weights: NamedTensors,
}

/// The weight files of `dir`: one `model.safetensors`, the shards an index names, or
/// `pytorch_model.bin`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(single);
        if p.exists() {
            return Ok(vec![p]);
        }
    }
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let p = dir.join(index);
        if !p.exists() {
            continue;
        }
        let v = read_json(&p)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .with_context(|| format!("{}: no \"weight_map\"", p.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.exists() {
                bail!(
                    "{}: names shard {}, which is missing",
                    p.display(),
                    f.display()
                );
            }
        }
        return Ok(files);
    }
    bail!(
        "{}: no weights (looked for model.safetensors, pytorch_model.bin and their shard indexes)",
        dir.display()
    )
}

/// The backbone's key names as `transformers` 5 writes them in memory (`q_proj`, `mlp.fc1`,
/// `swin.encoder`, ...) -> the names of the published checkpoints, which the loader reads.
fn published_name(key: &str) -> String {
    const BACKBONE: &str = "model.pixel_level_module.encoder.";
    let Some(rest) = key.strip_prefix(BACKBONE) else {
        return key.to_string();
    };
    let mut k = rest
        .replace("swin.encoder.", "encoder.")
        .replace("swin.embeddings.", "embeddings.");
    for (new, old) in [
        (
            "attention.relative_position_bias.relative_position_bias_table",
            "attention.self.relative_position_bias_table",
        ),
        ("attention.q_proj.", "attention.self.query."),
        ("attention.k_proj.", "attention.self.key."),
        ("attention.v_proj.", "attention.self.value."),
        ("attention.o_proj.", "attention.output.dense."),
        ("mlp.fc1.", "intermediate.dense."),
        ("mlp.fc2.", "output.dense."),
    ] {
        k = k.replace(new, old);
    }
    format!("{BACKBONE}{k}")
}

/// A `transformers` ResNet backbone key (`embedder.embedder.convolution`,
/// `encoder.stages.{s}.layers.{j}.layer.{k}.normalization`, `...shortcut.convolution`) ->
/// torchvision's (`conv1`, `layer{s+1}.{j}.bn{k+1}`, `downsample.0`), which the shared ResNet
/// body reads.
fn torchvision_resnet_name(key: &str) -> String {
    const BACKBONE: &str = "model.pixel_level_module.encoder.";
    let Some(rest) = key.strip_prefix(BACKBONE) else {
        return key.to_string();
    };
    let part = |kind: &str, k: &str| match kind {
        "convolution" => format!("conv{k}"),
        _ => format!("bn{k}"),
    };
    if let Some(r) = rest.strip_prefix("embedder.embedder.")
        && let Some((kind, tail)) = r.split_once('.')
    {
        return format!("{BACKBONE}{}.{tail}", part(kind, "1"));
    }
    if let Some(r) = rest.strip_prefix("encoder.stages.") {
        let p: Vec<&str> = r.split('.').collect();
        if let (Some(s), Some(j)) = (p.first().and_then(|s| s.parse::<usize>().ok()), p.get(2)) {
            let stage = format!("{BACKBONE}layer{}.{j}", s + 1);
            match (p.get(3), p.get(4), p.get(5)) {
                (Some(&"layer"), Some(k), Some(kind)) if p.len() > 6 => {
                    let k = k.parse::<usize>().map_or(0, |k| k + 1);
                    return format!(
                        "{stage}.{}.{}",
                        part(kind, &k.to_string()),
                        p[6..].join(".")
                    );
                }
                (Some(&"shortcut"), Some(kind), _) if p.len() > 5 => {
                    let i = if *kind == "convolution" { 0 } else { 1 };
                    return format!("{stage}.downsample.{i}.{}", p[5..].join("."));
                }
                _ => {}
            }
        }
    }
    key.to_string()
}

impl ModelFolder {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "{}: not a model folder (config.json + model.safetensors)",
                dir.display()
            );
        }
        let config = Mask2FormerConfig::read(&dir.join("config.json"))?;
        let preprocess = Preprocess::read(&dir.join("preprocessor_config.json"))?;
        let mut weights = NamedTensors {
            source: dir.display().to_string(),
            ..Default::default()
        };
        let rename = match config.backbone {
            BackboneConfig::Swin(_) => published_name,
            BackboneConfig::ResNet { .. } => torchvision_resnet_name,
        };
        for f in weight_files(dir)? {
            let part = NamedTensors::read(&f)?;
            for (k, t) in part.tensors {
                weights.tensors.insert(rename(&k), t);
            }
        }
        Ok(Self {
            config,
            preprocess,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Preprocess {
        let dir = std::env::temp_dir().join(format!("segrs-m2f-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{}.json", text.len()));
        std::fs::write(&p, text).unwrap();
        Preprocess::read(&p).unwrap()
    }

    #[test]
    fn processor_sizes_old_and_new() {
        let new =
            read(r#"{"size": {"shortest_edge": 384, "longest_edge": 640}, "size_divisor": 32}"#);
        assert_eq!((new.shortest_edge, new.longest_edge), (384, Some(640)));
        let old = read(
            r#"{"size": 384, "size_divisibility": 16, "image_mean": [123.675, 116.28, 103.53]}"#,
        );
        assert_eq!(
            (old.shortest_edge, old.longest_edge, old.size_divisor),
            (384, Some(1333), 16)
        );
        assert!((old.mean[0] - 0.485).abs() < 1e-6);
        // the processor's rounding: 427x640 -> short side 800 -> 800x1199 -> multiples of 32
        assert_eq!(Preprocess::default().resized_size((427, 640)), (800, 1216));
        // the long side's limit wins: 100x1000 -> 133x1333, then rounded up to 32
        let p = Preprocess::default();
        assert_eq!(p.resized_size((100, 1000)), (160, 1344));
    }
}
