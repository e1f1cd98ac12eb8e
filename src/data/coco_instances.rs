//! A COCO instances dataset for training instance segmentation: the JSON's images found in an
//! image folder, their objects as boxes, categories and masks, filtered as torchvision's
//! detection reference does (`ConvertCocoPolysToMask`, `_coco_remove_images_without_annotations`):
//! crowd regions dropped, boxes clamped to the image, degenerate boxes dropped, and (for
//! training) images left without objects removed. Masks stay RLE until a sample is decoded.

use crate::data::image_io::read_image;
use crate::formats::coco::{decode_rowmajor, load_gt};
use anyhow::{Result, bail};
use hotcoco::Rle;
use std::path::{Path, PathBuf};

/// One object of an image.
#[derive(Clone, Debug)]
pub struct InstanceObject {
    pub category: u64,
    /// `[x0, y0, x1, y1]` in pixels, clamped to the image.
    pub bbox: [f32; 4],
    pub rle: Rle,
}

#[derive(Clone, Debug)]
pub struct InstanceSample {
    pub path: PathBuf,
    pub image_id: u64,
    pub file_name: String,
    pub height: usize,
    pub width: usize,
    pub objects: Vec<InstanceObject>,
}

/// What loading left out, for the run's log.
#[derive(Clone, Debug, Default)]
pub struct Skipped {
    pub crowd: usize,
    pub degenerate_boxes: usize,
    /// Images without any object left (only removed when asked).
    pub empty_images: usize,
}

pub struct InstanceDataset {
    pub samples: Vec<InstanceSample>,
    /// `(id, name)` of the JSON's categories.
    pub categories: Vec<(u64, String)>,
    pub skipped: Skipped,
    pub json: PathBuf,
}

/// A decoded sample: 8-bit RGB pixels and the objects' boxes, categories and 0/1 masks.
pub struct DecodedSample {
    pub rgb: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub boxes: Vec<[f32; 4]>,
    pub categories: Vec<u64>,
    pub masks: Vec<Vec<u8>>,
}

impl InstanceDataset {
    /// Reads `json` (checked as `segrs eval coco` checks ground truth: known image and category
    /// ids, masks of the image's size) and finds every image under `images`.
    /// `drop_empty`: remove images without objects, as torchvision's reference does for
    /// training.
    pub fn load(json: &Path, images: &Path, drop_empty: bool) -> Result<Self> {
        let coco = load_gt(json)?;
        let mut skipped = Skipped::default();
        let mut samples = Vec::new();
        let mut imgs: Vec<&hotcoco::Image> = coco.dataset.images.iter().collect();
        imgs.sort_by_key(|i| i.id);
        for img in imgs {
            let path = images.join(&img.file_name);
            if !path.is_file() {
                bail!(
                    "{}: image {} ({}) not found at {}",
                    json.display(),
                    img.id,
                    img.file_name,
                    path.display()
                );
            }
            let (h, w) = (img.height as usize, img.width as usize);
            if h == 0 || w == 0 {
                bail!("{}: image {} has no size", json.display(), img.id);
            }
            let mut objects = Vec::new();
            for &aid in coco.get_ann_ids_for_img(img.id) {
                let Some(a) = coco.get_ann(aid) else { continue };
                if a.iscrowd {
                    skipped.crowd += 1;
                    continue;
                }
                let Some(rle) = coco.ann_to_rle(a) else {
                    bail!(
                        "{}: annotation {} has no usable segmentation",
                        json.display(),
                        a.id
                    );
                };
                let [x, y, bw, bh] = a.bbox.unwrap_or_else(|| hotcoco::mask::to_bbox(&rle));
                let bbox = [
                    (x as f32).clamp(0.0, w as f32),
                    (y as f32).clamp(0.0, h as f32),
                    ((x + bw) as f32).clamp(0.0, w as f32),
                    ((y + bh) as f32).clamp(0.0, h as f32),
                ];
                if !(bbox[2] > bbox[0] && bbox[3] > bbox[1]) {
                    skipped.degenerate_boxes += 1;
                    continue;
                }
                objects.push(InstanceObject {
                    category: a.category_id,
                    bbox,
                    rle,
                });
            }
            if drop_empty && objects.is_empty() {
                skipped.empty_images += 1;
                continue;
            }
            samples.push(InstanceSample {
                path,
                image_id: img.id,
                file_name: img.file_name.clone(),
                height: h,
                width: w,
                objects,
            });
        }
        if samples.is_empty() {
            bail!("{}: no usable images", json.display());
        }
        let mut categories: Vec<(u64, String)> = coco
            .dataset
            .categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        categories.sort();
        Ok(Self {
            samples,
            categories,
            skipped,
            json: json.to_path_buf(),
        })
    }

    /// Classes of a model for these categories: the largest id plus one (background 0), as
    /// torchvision's reference uses the ids as labels.
    pub fn num_classes(&self) -> usize {
        self.categories.iter().map(|c| c.0).max().unwrap_or(0) as usize + 1
    }
}

impl InstanceSample {
    /// Decodes the image and the objects' masks; the image must have the JSON's size.
    pub fn decode(&self) -> Result<DecodedSample> {
        let pic = read_image(&self.path)?;
        if pic.height != self.height || pic.width != self.width {
            bail!(
                "{}: image is {}x{} but the annotations say {}x{}",
                self.path.display(),
                pic.width,
                pic.height,
                self.width,
                self.height
            );
        }
        Ok(DecodedSample {
            rgb: pic.to_rgb8(),
            height: self.height,
            width: self.width,
            boxes: self.objects.iter().map(|o| o.bbox).collect(),
            categories: self.objects.iter().map(|o| o.category).collect(),
            masks: self
                .objects
                .iter()
                .map(|o| decode_rowmajor(&o.rle))
                .collect(),
        })
    }
}

impl DecodedSample {
    /// The sample mirrored left-right (torchvision's `RandomHorizontalFlip` for detection).
    pub fn flip_horizontal(&mut self) {
        let (h, w) = (self.height, self.width);
        for row in self.rgb.chunks_exact_mut(w * 3) {
            for x in 0..w / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                }
            }
        }
        for m in &mut self.masks {
            for y in 0..h {
                m[y * w..(y + 1) * w].reverse();
            }
        }
        for b in &mut self.boxes {
            *b = [w as f32 - b[2], b[1], w as f32 - b[0], b[3]];
        }
    }
}
