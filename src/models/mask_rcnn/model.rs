//! The whole Mask R-CNN (He et al. 2017) as torchvision's `maskrcnn_resnet50_fpn` (v1) and
//! `maskrcnn_resnet50_fpn_v2` run it at test time, one image per forward pass:
//! transform -> backbone (ResNet + FPN) -> RPN -> box branch -> mask branch -> back to the
//! original image. Checkpoints are torchvision's state_dicts as users have them (the v1 file's
//! legacy key names included) or safetensors with the same keys; the variant and the number
//! of classes are read from the keys.

use super::backbone::{FeatureMap, ResNet};
use super::fpn::Fpn;
use super::mask_head::{MASK_POOL, MaskBranch, paste_masks};
use super::roi_heads::{BoxBranch, BoxConfig, detect};
use super::rpn::{RpnConfig, RpnHead, propose};
use super::transform::{ModelInput, TransformConfig, resize_boxes};
use crate::nn::Weights;
use crate::ops::Precision;
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Which torchvision recipe a checkpoint follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `maskrcnn_resnet50_fpn`: plain FPN, one-conv RPN head, two-layer MLP box head.
    V1,
    /// `maskrcnn_resnet50_fpn_v2`: BatchNorm in the FPN and heads, two-conv RPN head, 4conv1fc box head.
    V2,
}

/// All test-time settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct MaskRcnnConfig {
    pub transform: TransformConfig,
    pub rpn: RpnConfig,
    pub boxes: BoxConfig,
}

pub struct MaskRcnn {
    pub variant: Variant,
    pub num_classes: usize,
    body: ResNet,
    fpn: Fpn,
    rpn: RpnHead,
    box_branch: BoxBranch,
    mask_branch: MaskBranch,
    pub source: String,
}

/// Detections of one image in its original pixel frame, best first.
#[derive(Clone, Debug)]
pub struct InstancePrediction {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub labels: Vec<usize>,
    /// Mask probabilities, one `height * width` map per detection (threshold 0.5 for a mask).
    pub masks: Vec<Vec<f32>>,
    pub height: usize,
    pub width: usize,
    /// The RPN's proposals in the resized frame (what the box branch saw).
    pub proposals: Vec<[f32; 4]>,
}

impl InstancePrediction {
    /// Detection `i`'s mask as 0/1 bytes (probability > 0.5).
    pub fn mask(&self, i: usize) -> Vec<u8> {
        self.masks[i].iter().map(|&p| (p > 0.5) as u8).collect()
    }

    /// Detection `i` as a COCO results record (RLE mask, `[x, y, w, h]` box, score).
    pub fn result_record(
        &self,
        i: usize,
        image_id: u64,
        file_name: &str,
    ) -> Result<serde_json::Value> {
        crate::formats::coco::result_record(
            image_id,
            file_name,
            self.labels[i] as u64,
            self.boxes[i],
            self.scores[i],
            &self.mask(i),
            self.height,
            self.width,
        )
    }
}

/// Renames the keys of torchvision's pre-0.13 module layout (the official v1 file) to today's:
/// `fpn.{inner,layer}_blocks.{i}.*` -> `.{i}.0.*`, `rpn.head.conv.*` -> `conv.0.0.*`,
/// `mask_head.mask_fcn{i}.*` -> `mask_head.{i-1}.0.*` (as the modules' `_load_from_state_dict`).
pub fn upgrade_legacy_keys(named: &mut NamedTensors) {
    let renamed: Vec<(String, String)> = named
        .tensors
        .keys()
        .filter_map(|k| legacy_to_current(k).map(|n| (k.clone(), n)))
        .collect();
    for (old, new) in renamed {
        if let Some(t) = named.tensors.remove(&old) {
            named.tensors.insert(new, t);
        }
    }
}

fn legacy_to_current(k: &str) -> Option<String> {
    for block in ["backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks."] {
        if let Some(rest) = k.strip_prefix(block) {
            let mut parts = rest.splitn(2, '.');
            let (i, tail) = (parts.next()?, parts.next()?);
            if i.parse::<usize>().is_ok() && (tail == "weight" || tail == "bias") {
                return Some(format!("{block}{i}.0.{tail}"));
            }
        }
    }
    if let Some(tail) = k.strip_prefix("rpn.head.conv.")
        && (tail == "weight" || tail == "bias")
    {
        return Some(format!("rpn.head.conv.0.0.{tail}"));
    }
    if let Some(rest) = k.strip_prefix("roi_heads.mask_head.mask_fcn") {
        let mut parts = rest.splitn(2, '.');
        let (i, tail) = (parts.next()?.parse::<usize>().ok()?, parts.next()?);
        return Some(format!(
            "roi_heads.mask_head.{}.0.{tail}",
            i.checked_sub(1)?
        ));
    }
    None
}

impl MaskRcnn {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Precision::F32)
    }

    /// [`load`](Self::load) with the convolutions and dense layers computing in `precision`.
    pub fn load_with(path: &Path, precision: Precision) -> Result<Self> {
        let named = NamedTensors::read(path)?;
        Self::from_tensors_with(named, precision)
            .with_context(|| format!("loading Mask R-CNN from {}", path.display()))
    }

    pub fn from_tensors(named: NamedTensors) -> Result<Self> {
        Self::from_tensors_with(named, Precision::F32)
    }

    pub fn from_tensors_with(mut named: NamedTensors, precision: Precision) -> Result<Self> {
        if !named.tensors.contains_key("backbone.body.conv1.weight")
            || !named
                .tensors
                .keys()
                .any(|k| k.starts_with("roi_heads.mask_predictor."))
        {
            let sample: Vec<&String> = named.tensors.keys().take(5).collect();
            bail!(
                "{}: not a torchvision Mask R-CNN checkpoint (no backbone.body.* / roi_heads.mask_predictor.* keys; first keys {sample:?})",
                named.source
            );
        }
        upgrade_legacy_keys(&mut named);
        let w = Weights::new(&named).with_precision(precision);
        let variant = if w.contains("roi_heads.box_head.fc6.weight") {
            Variant::V1
        } else {
            Variant::V2
        };
        let bn = variant == Variant::V2;
        let channels = w
            .dim("backbone.fpn.layer_blocks.0.0.weight", 0)
            .unwrap_or(256);
        let body = ResNet::load(&w.pp("backbone.body"));
        let fpn = Fpn::load(&w.pp("backbone.fpn"), &[256, 512, 1024, 2048], channels, bn);
        let rpn = RpnHead::load(&w.pp("rpn.head"), channels);
        if rpn.anchors_per_position != super::anchors::ASPECT_RATIOS.len() {
            bail!(
                "{}: the RPN predicts {} anchors per position; segrs supports torchvision's default anchor generator ({} aspect ratios, one size per level)",
                named.source,
                rpn.anchors_per_position,
                super::anchors::ASPECT_RATIOS.len()
            );
        }
        let box_branch = BoxBranch::load(&w.pp("roi_heads"), channels);
        let num_classes = box_branch.num_classes;
        let mask_branch = MaskBranch::load(&w.pp("roi_heads"), channels, num_classes, bn);
        w.finish(match variant {
            Variant::V1 => "Mask R-CNN (v1)",
            Variant::V2 => "Mask R-CNN (v2)",
        })?;
        Ok(Self {
            variant,
            num_classes,
            body,
            fpn,
            rpn,
            box_branch,
            mask_branch,
            source: named.source.clone(),
        })
    }

    /// The backbone's pyramid (P2-P6) of a preprocessed image.
    pub fn features(&self, input: &ModelInput) -> Vec<FeatureMap> {
        let (ph, pw) = input.padded;
        self.fpn.forward(&self.body.forward(&input.data, ph, pw))
    }

    /// Detects the instances of an 8-bit RGB `h x w` image.
    pub fn predict(
        &self,
        rgb: &[u8],
        h: usize,
        w: usize,
        cfg: &MaskRcnnConfig,
    ) -> Result<InstancePrediction> {
        if rgb.len() != h * w * 3 {
            bail!("image must be {h}x{w}x3 bytes, got {}", rgb.len());
        }
        if h == 0 || w == 0 {
            bail!("empty image");
        }
        let input = cfg.transform.apply(rgb, h, w);
        let levels = self.features(&input);
        let proposals = propose(&self.rpn, &levels, input.resized, input.padded, &cfg.rpn);
        let det = detect(
            &self.box_branch,
            &levels,
            &proposals.boxes,
            input.resized,
            &cfg.boxes,
        );
        let masks = self
            .mask_branch
            .forward(&levels, &det.boxes, &det.labels, input.resized);
        let mut boxes = det.boxes;
        resize_boxes(&mut boxes, input.resized, (h, w));
        let masks = paste_masks(&masks, 2 * MASK_POOL, &boxes, (h, w));
        Ok(InstancePrediction {
            boxes,
            scores: det.scores,
            labels: det.labels,
            masks,
            height: h,
            width: w,
            proposals: proposals.boxes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::legacy_to_current;

    #[test]
    fn legacy_v1_keys_map_to_todays_modules() {
        for (old, new) in [
            (
                "backbone.fpn.inner_blocks.2.weight",
                "backbone.fpn.inner_blocks.2.0.weight",
            ),
            (
                "backbone.fpn.layer_blocks.0.bias",
                "backbone.fpn.layer_blocks.0.0.bias",
            ),
            ("rpn.head.conv.weight", "rpn.head.conv.0.0.weight"),
            (
                "roi_heads.mask_head.mask_fcn1.weight",
                "roi_heads.mask_head.0.0.weight",
            ),
            (
                "roi_heads.mask_head.mask_fcn4.bias",
                "roi_heads.mask_head.3.0.bias",
            ),
        ] {
            assert_eq!(legacy_to_current(old).as_deref(), Some(new), "{old}");
        }
        for current in [
            "backbone.fpn.inner_blocks.2.0.weight",
            "rpn.head.conv.0.0.weight",
            "roi_heads.mask_head.0.0.weight",
            "roi_heads.box_head.fc6.weight",
            "backbone.body.layer1.0.conv1.weight",
        ] {
            assert_eq!(legacy_to_current(current), None, "{current}");
        }
    }
}
