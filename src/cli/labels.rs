//! The mask-convention flags `train` and `eval semantic` share.

use anyhow::{Result, bail};
use clap::Args;
use segrs::data::labels::{LabelConvention, read_class_names, read_label_map};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct LabelArgs {
    /// Masks are object / background: 0/255, 0/1, or grayscale such as JPEG masks (values >=
    /// --mask-threshold are the object; lossy masks get one note).
    #[arg(long)]
    pub binary: bool,
    /// With --binary: the smallest mask value that counts as the object.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u8).range(1..))]
    pub mask_threshold: u8,
    /// Mask value 0 is "other" and ignored, k is class k - 1 (ADE20K; mmseg's reduce_zero_label).
    #[arg(long)]
    pub reduce_zero_label: bool,
    /// Map stored mask values to classes (JSON {"7": 0, ...} or CSV value,class; values it does
    /// not list are ignored), e.g. Cityscapes label ids to train ids.
    #[arg(long)]
    pub label_map: Option<PathBuf>,
    /// Class names: one per line, a JSON list, or a CSV with a Name column (objectInfo150.csv).
    #[arg(long)]
    pub class_names: Option<PathBuf>,
}

impl LabelArgs {
    /// The conversion these flags ask for; `ignore` is the ignore value after it.
    pub fn convention(&self, ignore: Option<u32>) -> Result<LabelConvention> {
        if self.binary && (self.reduce_zero_label || self.label_map.is_some()) {
            bail!("--binary does not combine with --reduce-zero-label or --label-map");
        }
        Ok(LabelConvention {
            binary_threshold: self.binary.then_some(self.mask_threshold),
            reduce_zero_label: self.reduce_zero_label,
            label_map: self.label_map.as_deref().map(read_label_map).transpose()?,
            ignore: ignore.unwrap_or(255),
        })
    }

    /// The class names, checked against the number of classes.
    pub fn names(&self, classes: usize) -> Result<Option<Vec<String>>> {
        let Some(p) = &self.class_names else {
            return Ok(None);
        };
        let names = read_class_names(p)?;
        if names.len() != classes {
            bail!(
                "{}: {} class names for {classes} classes",
                p.display(),
                names.len()
            );
        }
        Ok(Some(names))
    }

    /// Prints the note on lossy binary masks read since the last call.
    pub fn report_lossy(&self) {
        if let Some(n) = segrs::data::labels::lossy_note(self.mask_threshold) {
            eprintln!("{n}");
        }
    }
}
