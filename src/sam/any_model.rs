//! One front for every promptable model a checkpoint can hold: SAM (ViT-B/L/H, MobileSAM) or
//! SAM 2 (Hiera-T/S/B+/L), told apart by the checkpoint's keys, with the same image, prompt,
//! embedding-file and mask-generator calls.

use super::predictor::{Prediction, Prompt, load_embedding, read_embedding};
use super::sam2_predictor::Postprocess;
use crate::models::sam::model::{ImageEmbedding, Sam};
use crate::models::sam2::model::Sam2;
use crate::ops::Precision;
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use std::path::Path;

#[allow(clippy::large_enum_variant)]
pub enum AnySam {
    Sam(Sam),
    Sam2(Sam2),
}

impl AnySam {
    /// Reads a checkpoint once and builds the model its keys describe.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Precision::F32)
    }

    /// [`load`](Self::load) with the dense layers and convolutions computing in `precision`.
    pub fn load_with(path: &Path, precision: Precision) -> Result<Self> {
        let w = NamedTensors::read(path)?;
        Self::from_tensors_with(&w, precision)
            .with_context(|| format!("loading {}", path.display()))
    }

    pub fn from_tensors(w: &NamedTensors) -> Result<Self> {
        Self::from_tensors_with(w, Precision::F32)
    }

    pub fn from_tensors_with(w: &NamedTensors, precision: Precision) -> Result<Self> {
        if Sam2::recognises(w) {
            Ok(Self::Sam2(Sam2::from_tensors_sized_with(
                w,
                crate::models::sam2::model::DEFAULT_IMAGE_SIZE,
                precision,
            )?))
        } else {
            Ok(Self::Sam(Sam::from_tensors_with(w, precision)?))
        }
    }

    /// `vit_b`, ..., `sam2.1_hiera_tiny`, ...
    pub fn variant(&self) -> &str {
        match self {
            Self::Sam(m) => &m.variant,
            Self::Sam2(m) => &m.variant,
        }
    }

    /// Side of the low-resolution logits (`4 x` the embedding grid: 256).
    pub fn low_res_size(&self) -> usize {
        match self {
            Self::Sam(m) => 4 * m.image_encoder.embedding_size(),
            Self::Sam2(m) => 4 * m.embedding_size(),
        }
    }

    /// The image encoder on an 8-bit RGB image (`h x w x 3`).
    pub fn set_image(&self, rgb: &[u8], h: usize, w: usize) -> Result<ImageEmbedding> {
        match self {
            Self::Sam(m) => m.set_image(rgb, h, w),
            Self::Sam2(m) => m.set_image(rgb, h, w),
        }
    }

    /// Masks for one prompt set. `post` (hole and sprinkle removal, mask threshold) is SAM 2's
    /// predictor's; SAM's predictor has none, so it must be the default there.
    pub fn predict(
        &self,
        e: &ImageEmbedding,
        p: &Prompt,
        multimask: bool,
        post: &Postprocess,
    ) -> Result<Prediction> {
        match self {
            Self::Sam(m) => {
                if *post != Postprocess::default() {
                    bail!(
                        "hole / sprinkle removal and the mask threshold are SAM 2 predictor settings; {} is a SAM model",
                        m.variant
                    );
                }
                m.predict(e, p, multimask)
            }
            Self::Sam2(m) => m.predict(e, p, multimask, post),
        }
    }

    /// Reads an embedding file and checks it against the image size and this model.
    pub fn load_embedding(
        &self,
        path: &Path,
        image_size: (usize, usize),
    ) -> Result<ImageEmbedding> {
        match self {
            Self::Sam(m) => load_embedding(path, m, image_size),
            Self::Sam2(m) => {
                let e = read_embedding(path, image_size)?;
                m.check_embedding(&e).with_context(|| {
                    format!("{}: embedding does not fit the model", path.display())
                })?;
                Ok(e)
            }
        }
    }
}
