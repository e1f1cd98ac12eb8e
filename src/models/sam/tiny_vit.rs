//! MobileSAM's TinyViT image encoder (placeholder while being written).
use crate::weights::NamedTensors;
use anyhow::{Result, bail};

pub struct TinyViT {
    pub img_size: usize,
}

impl TinyViT {
    pub fn load(src: &NamedTensors, _prefix: &str) -> Result<Self> {
        bail!("{}: TinyViT not yet supported", src.source)
    }
    pub fn embedding_size(&self) -> usize {
        self.img_size / 16
    }
    pub fn forward(&self, _image: &[f32]) -> Result<Vec<f32>> {
        bail!("TinyViT not yet supported")
    }
}
