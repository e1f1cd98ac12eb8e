//! SAM's predictor: `set_image` (resize the longest side to the model input with Pillow's
//! bilinear filter, normalise with the official pixel statistics, zero-pad to a square, run the
//! image encoder once) and `predict` (prompts in original-image pixels -> masks at the original
//! size, IoU predictions and the low-resolution logits to feed back as a mask prompt).

use super::resize::pil_resize_bilinear;
use super::transforms::{apply_coords, preprocess_shape};
pub use crate::models::sam::model::ImageEmbedding;
use crate::models::sam::model::{PIXEL_MEAN, PIXEL_STD, Sam};
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::weights::{HostTensor, NamedTensors};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// One prompt set, in original-image pixel coordinates.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    /// `(x, y, label)`, label 1 = foreground, 0 = background.
    pub points: Vec<(f64, f64, i32)>,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<[f64; 4]>,
    /// Low-resolution logits `[4G, 4G]` from an earlier prediction.
    pub mask_input: Option<Vec<f32>>,
}

/// Masks of one prompt set.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Logits at the original image size, one plane per mask (threshold 0.0 for the mask).
    pub logits: Vec<Vec<f32>>,
    pub scores: Vec<f32>,
    /// `[4G, 4G]` logits per mask, to pass back as `Prompt::mask_input`.
    pub low_res: Vec<Vec<f32>>,
    pub height: usize,
    pub width: usize,
    pub low_res_size: usize,
    /// SAM 2: the object score logit (is there an object at all?).
    pub object_score: Option<f32>,
}

impl Prompt {
    /// Checks a prompt set against an image of `(h, w)`: not empty, points inside with labels
    /// 0 / 1, the box inside and not flipped.
    pub fn check(&self, (h, w): (usize, usize)) -> Result<()> {
        if self.points.is_empty() && self.bbox.is_none() && self.mask_input.is_none() {
            bail!("empty prompt: give at least one point, a box or a mask input");
        }
        let inside = |x: f64, y: f64| {
            x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0 && x <= w as f64 && y <= h as f64
        };
        for &(x, y, l) in &self.points {
            if !inside(x, y) {
                bail!("point ({x}, {y}) lies outside the {w}x{h} image");
            }
            if l != 0 && l != 1 {
                bail!(
                    "point ({x}, {y}) has label {l}; labels are 1 (foreground) or 0 (background)"
                );
            }
        }
        if let Some([x0, y0, x1, y1]) = self.bbox
            && (!inside(x0, y0) || !inside(x1, y1) || x1 < x0 || y1 < y0)
        {
            bail!(
                "box ({x0}, {y0}, {x1}, {y1}) is not an x0,y0,x1,y1 box inside the {w}x{h} image"
            );
        }
        Ok(())
    }
}

impl Prediction {
    /// Mask `i` as 0/1 bytes (logit > 0.0).
    pub fn mask(&self, i: usize) -> Vec<u8> {
        self.logits[i].iter().map(|&v| (v > 0.0) as u8).collect()
    }
}

impl Sam {
    /// Runs the image encoder on an 8-bit RGB image (`h x w x 3`).
    pub fn set_image(&self, rgb: &[u8], h: usize, w: usize) -> Result<ImageEmbedding> {
        if h == 0 || w == 0 || rgb.len() != h * w * 3 {
            bail!(
                "image must be {h}x{w}x3 bytes, got {} (and not empty)",
                rgb.len()
            );
        }
        let s = self.image_encoder.input_size();
        let (nh, nw) = preprocess_shape(h, w, s);
        if nh == 0 || nw == 0 {
            bail!("image {w}x{h} is too elongated to resize to {s} on its long side");
        }
        let resized = pil_resize_bilinear(rgb, w, h, 3, nw, nh);
        let mut input = vec![0.0f32; 3 * s * s];
        for c in 0..3 {
            for y in 0..nh {
                for x in 0..nw {
                    input[(c * s + y) * s + x] =
                        (resized[(y * nw + x) * 3 + c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
                }
            }
        }
        let features = self.image_encoder.forward(&input)?;
        let grid = self.image_encoder.embedding_size();
        let channels = features.len() / (grid * grid);
        Ok(ImageEmbedding::new(
            features,
            channels,
            grid,
            (h, w),
            (nh, nw),
        ))
    }

    /// Checks that an embedding (e.g. read from disk) fits this model.
    pub fn check_embedding(&self, e: &ImageEmbedding) -> Result<()> {
        let g = self.image_encoder.embedding_size();
        let c = self.prompt_encoder.embed_dim;
        if e.grid != g || e.channels != c || e.features.len() != c * g * g {
            bail!(
                "the embedding is {}x{}x{}, this {} model makes {c}x{g}x{g}",
                e.channels,
                e.grid,
                e.grid,
                self.variant
            );
        }
        Ok(())
    }

    /// Masks for one prompt set. `multimask`: the three multimask outputs (masks 1-3), else
    /// mask 0, as the reference.
    pub fn predict(&self, e: &ImageEmbedding, p: &Prompt, multimask: bool) -> Result<Prediction> {
        let pts = self.model_points(e, p)?;
        let (low_res, scores) = self.decode(
            e,
            &pts,
            p.bbox.map(|b| self.model_box(e, b)),
            p.mask_input.as_deref(),
            multimask,
        )?;
        let logits = low_res.iter().map(|m| self.postprocess(e, m)).collect();
        Ok(Prediction {
            logits,
            scores,
            low_res,
            height: e.original_size.0,
            width: e.original_size.1,
            low_res_size: 4 * e.grid,
            object_score: None,
        })
    }

    /// Validates a prompt set and maps its points to the model frame (f64 transform, then f32
    /// as `torch.as_tensor(..., dtype=torch.float)` in the reference predictor).
    fn model_points(&self, e: &ImageEmbedding, p: &Prompt) -> Result<Vec<PointPrompt>> {
        p.check(e.original_size)?;
        let s = self.image_encoder.input_size();
        Ok(p.points
            .iter()
            .map(|&(x, y, label)| {
                let (tx, ty) = apply_coords(x, y, e.original_size, s);
                PointPrompt {
                    x: tx as f32 as f64,
                    y: ty as f32 as f64,
                    label,
                }
            })
            .collect())
    }

    fn model_box(&self, e: &ImageEmbedding, b: [f64; 4]) -> [f64; 4] {
        let s = self.image_encoder.input_size();
        let (x0, y0) = apply_coords(b[0], b[1], e.original_size, s);
        let (x1, y1) = apply_coords(b[2], b[3], e.original_size, s);
        [x0, y0, x1, y1].map(|v| v as f32 as f64)
    }
}

/// Embedding files: safetensors with `image_embedding` `[1, C, G, G]` (and for SAM 2 the
/// high-resolution features `high_res_feats.0` / `.1`), the sizes and the model in the
/// metadata, so a second run can skip the encoder.
pub fn save_embedding(path: &Path, e: &ImageEmbedding, variant: &str) -> Result<()> {
    let mut t = BTreeMap::new();
    t.insert(
        "image_embedding".to_string(),
        HostTensor::new(vec![1, e.channels, e.grid, e.grid], e.features.clone()),
    );
    if let Some((s0, s1)) = e.high_res.as_deref() {
        let (g, c) = (e.grid, e.channels);
        t.insert(
            "high_res_feats.0".to_string(),
            HostTensor::new(vec![1, c / 8, 4 * g, 4 * g], s0.clone()),
        );
        t.insert(
            "high_res_feats.1".to_string(),
            HostTensor::new(vec![1, c / 4, 2 * g, 2 * g], s1.clone()),
        );
    }
    let mut m = BTreeMap::new();
    m.insert(
        "segrs_sam_embedding".to_string(),
        serde_json::json!({
            "original_size": [e.original_size.0, e.original_size.1],
            "input_size": [e.input_size.0, e.input_size.1],
            "variant": variant,
        })
        .to_string(),
    );
    crate::weights::safetensors::write(path, &t, &m)
        .with_context(|| format!("writing embedding {}", path.display()))
}

/// Reads an embedding written by [`save_embedding`] and checks it against the image size
/// (the caller checks it against the model).
pub fn read_embedding(path: &Path, image_size: (usize, usize)) -> Result<ImageEmbedding> {
    let nt = NamedTensors::read(path)?;
    let Some(t) = nt.get("image_embedding") else {
        bail!(
            "{}: no image_embedding tensor (not a segrs SAM embedding file)",
            path.display()
        );
    };
    let Some(meta) = nt.metadata.get("segrs_sam_embedding") else {
        bail!(
            "{}: no segrs_sam_embedding metadata (not a segrs SAM embedding file)",
            path.display()
        );
    };
    let v: serde_json::Value = serde_json::from_str(meta)
        .with_context(|| format!("{}: malformed embedding metadata", path.display()))?;
    let pair = |k: &str| -> Option<(usize, usize)> {
        let a = v.get(k)?.as_array()?;
        Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
    };
    let (Some(orig), Some(inp)) = (pair("original_size"), pair("input_size")) else {
        bail!(
            "{}: embedding metadata lacks original_size / input_size",
            path.display()
        );
    };
    if orig != image_size {
        bail!(
            "{}: the embedding was made for a {}x{} image, this image is {}x{}",
            path.display(),
            orig.1,
            orig.0,
            image_size.1,
            image_size.0
        );
    }
    if t.shape.len() != 4 || t.shape[0] != 1 || t.shape[2] != t.shape[3] {
        bail!(
            "{}: image_embedding has shape {:?}, expected [1, C, G, G]",
            path.display(),
            t.shape
        );
    }
    let mut e = ImageEmbedding::new(t.data.clone(), t.shape[1], t.shape[2], orig, inp);
    if let (Some(s0), Some(s1)) = (nt.get("high_res_feats.0"), nt.get("high_res_feats.1")) {
        e.high_res = Some(std::sync::Arc::new((s0.data.clone(), s1.data.clone())));
    }
    Ok(e)
}

/// Reads an embedding written by [`save_embedding`] and checks it against the image size
/// and the model.
pub fn load_embedding(
    path: &Path,
    model: &Sam,
    image_size: (usize, usize),
) -> Result<ImageEmbedding> {
    let e = read_embedding(path, image_size)?;
    model
        .check_embedding(&e)
        .with_context(|| format!("{}: embedding does not fit the model", path.display()))?;
    let want = preprocess_shape(
        e.original_size.0,
        e.original_size.1,
        model.image_encoder.input_size(),
    );
    if want != e.input_size {
        bail!(
            "{}: embedding input size {:?} does not match this model's resize {:?}",
            path.display(),
            e.input_size,
            want
        );
    }
    Ok(e)
}
