//! segrs checkpoints: one safetensors file holding the weights under PyTorch key names and, in
//! its metadata, everything needed to use them (architecture, preprocessing, classes).
//! A plain PyTorch `state_dict` (`.pth`) is accepted too; then the architecture is read from
//! its keys and the preprocessing comes from the command line.

use crate::data::preprocess::Normalize;
use crate::models::unet::{UNet, UNetConfig, state_dict};
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "segrs-unet-v1";

/// What a segrs checkpoint records besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub unet: UNetConfig,
    pub normalize: Normalize,
    pub ignore_index: Option<u32>,
    pub binary: bool,
    #[serde(default)]
    pub class_names: Vec<String>,
    #[serde(default)]
    pub epoch: usize,
    /// How the training masks' values became classes (to write predictions back as label ids).
    #[serde(default)]
    pub labels: crate::data::labels::LabelConvention,
}

/// Saves the weights and metadata atomically.
pub fn save(path: &Path, model: &UNet, meta: &CheckpointMeta) -> Result<()> {
    let tensors = state_dict::export(model);
    let mut md = BTreeMap::new();
    md.insert("segrs".to_string(), serde_json::to_string(meta)?);
    md.insert("format".to_string(), "pt".to_string());
    crate::weights::safetensors::write(path, &tensors, &md)
        .with_context(|| format!("{}: saving checkpoint", path.display()))
}

/// A loaded U-Net checkpoint; `meta` is `None` for a plain PyTorch state_dict.
pub struct LoadedUNet {
    pub model: UNet,
    pub meta: Option<CheckpointMeta>,
}

/// Loads a segrs checkpoint or a PyTorch U-Net state_dict. `expect` (in_channels, classes), when
/// given, must agree with the file.
pub fn load(
    path: &Path,
    expect: (Option<usize>, Option<usize>),
    device: &Device,
) -> Result<LoadedUNet> {
    let named = NamedTensors::read(path)?;
    let meta = match named.metadata.get("segrs") {
        Some(s) => {
            let m: CheckpointMeta = serde_json::from_str(s)
                .with_context(|| format!("{}: malformed segrs metadata", path.display()))?;
            if m.format != FORMAT {
                bail!(
                    "{}: checkpoint format {} is not {FORMAT}",
                    path.display(),
                    m.format
                );
            }
            Some(m)
        }
        None => None,
    };
    let config = match &meta {
        Some(m) => m.unet.clone(),
        None => state_dict::infer_config(&named)?,
    };
    if let Some(c) = expect.0
        && c != config.in_channels
    {
        bail!(
            "{}: the checkpoint takes {} input channel(s), not {c} (--in-channels)",
            path.display(),
            config.in_channels
        );
    }
    if let Some(k) = expect.1
        && k != config.num_classes
    {
        bail!(
            "{}: the checkpoint predicts {} classes, not {k} (--classes)",
            path.display(),
            config.num_classes
        );
    }
    let model = state_dict::import(&config, &named, device)?;
    Ok(LoadedUNet { model, meta })
}
