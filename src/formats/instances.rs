//! Instance-mask layouts and their conversion to and from COCO instances JSON:
//! * the DSB2018 layout: `ROOT/<id>/images/<id>.png` and `ROOT/<id>/masks/<k>.png` (one binary
//!   PNG per object);
//! * label maps (StarDist layout): one 8/16-bit PNG or TIFF per image, each nonzero id an object.

use super::coco::{decode_rowmajor, encode_rowmajor};
use crate::data::folder::list_images;
use crate::data::image_io::{LabelMap, read_image, read_mask, write_png};
use anyhow::{Context, Result, bail};
use hotcoco::{Annotation, Category, Dataset, Image, Segmentation, mask};
use std::path::Path;

/// One image's objects as row-major binary masks.
pub struct InstanceImage {
    pub file_name: String,
    pub height: usize,
    pub width: usize,
    /// (category id, mask) per object.
    pub objects: Vec<(u64, Vec<u8>)>,
}

/// Builds a COCO dataset: compressed-RLE segmentations, area and bbox from the masks.
pub fn to_coco(images: &[InstanceImage], categories: Vec<Category>) -> Result<Dataset> {
    let mut ds = Dataset {
        categories,
        ..Default::default()
    };
    let mut ann_id = 1;
    for (i, img) in images.iter().enumerate() {
        let image_id = i as u64 + 1;
        ds.images.push(Image {
            id: image_id,
            file_name: img.file_name.clone(),
            height: img.height as u32,
            width: img.width as u32,
            ..Default::default()
        });
        for (cat, m) in &img.objects {
            let rle = encode_rowmajor(m, img.height as u32, img.width as u32)?;
            let area = mask::area(&rle);
            if area == 0 {
                continue;
            }
            let bbox = mask::to_bbox(&rle);
            ds.annotations.push(Annotation {
                id: ann_id,
                image_id,
                category_id: *cat,
                segmentation: Some(Segmentation::CompressedRle {
                    size: [img.height as u32, img.width as u32],
                    counts: mask::rle_to_string(&rle),
                }),
                area: Some(area as f64),
                bbox: Some(bbox),
                iscrowd: false,
                ..Default::default()
            });
            ann_id += 1;
        }
    }
    Ok(ds)
}

/// Reads a DSB2018-style folder (one subfolder per image with `images/` and `masks/`).
pub fn read_dsb(root: &Path, category: u64) -> Result<Vec<InstanceImage>> {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("{}: cannot read", root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("images").is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: no <id>/images/ subfolders (DSB2018 layout)",
            root.display()
        );
    }
    let mut out = Vec::new();
    for d in dirs {
        let imgs = list_images(&d.join("images"))?;
        let Some((_, img_path)) = imgs.first() else {
            bail!("{}: no image", d.join("images").display())
        };
        let pic = read_image(img_path)?;
        let mut objects = Vec::new();
        if d.join("masks").is_dir() {
            for (_, mp) in list_images(&d.join("masks"))? {
                let m = read_mask(&mp)?;
                if (m.width, m.height) != (pic.width, pic.height) {
                    bail!(
                        "{}: mask is {}x{} but the image is {}x{}",
                        mp.display(),
                        m.width,
                        m.height,
                        pic.width,
                        pic.height
                    );
                }
                objects.push((category, m.data.iter().map(|&v| (v > 0) as u8).collect()));
            }
        }
        let file_name = img_path.file_name().unwrap().to_string_lossy().to_string();
        out.push(InstanceImage {
            file_name,
            height: pic.height,
            width: pic.width,
            objects,
        });
    }
    Ok(out)
}

/// Splits a label map into one mask per nonzero id (ascending).
pub fn split_label_map(lm: &LabelMap) -> Vec<(u32, Vec<u8>)> {
    let mut ids: Vec<u32> = lm.data.iter().copied().filter(|&v| v != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| (id, lm.data.iter().map(|&v| (v == id) as u8).collect()))
        .collect()
}

/// Reads label maps (a file or a folder of them) as instance images of one category.
pub fn read_label_maps(path: &Path, category: u64) -> Result<Vec<InstanceImage>> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        list_images(path)?.into_iter().map(|(_, p)| p).collect()
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        bail!("{}: no label maps", path.display());
    }
    files
        .iter()
        .map(|f| {
            let lm = read_mask(f)?;
            Ok(InstanceImage {
                file_name: f.file_name().unwrap().to_string_lossy().to_string(),
                height: lm.height,
                width: lm.width,
                objects: split_label_map(&lm)
                    .into_iter()
                    .map(|(_, m)| (category, m))
                    .collect(),
            })
        })
        .collect()
}

/// Writes every image's annotations as DSB-style folders: `OUT/<stem>/masks/<ann id>.png`
/// (0/255), plus `OUT/<stem>/labels.png`, an instance-id map (later annotations on top).
pub fn write_dsb(coco: &hotcoco::COCO, out: &Path) -> Result<usize> {
    let mut n = 0;
    for img in &coco.dataset.images {
        let stem = Path::new(&img.file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or(img.id.to_string());
        let dir = out.join(&stem);
        let (h, w) = (img.height as usize, img.width as usize);
        let mut labels = LabelMap {
            width: w,
            height: h,
            data: vec![0; h * w],
        };
        let anns = coco.load_anns(&coco.get_ann_ids(&[img.id], &[], None, None));
        for (k, a) in anns.iter().enumerate() {
            let rle = coco.ann_to_rle(a).ok_or_else(|| {
                anyhow::anyhow!(
                    "annotation {} of image {}: cannot rasterise its segmentation",
                    a.id,
                    img.id
                )
            })?;
            let m = decode_rowmajor(&rle);
            let px: Vec<u8> = m.iter().map(|&v| v * 255).collect();
            write_png(
                &dir.join("masks").join(format!("{}.png", a.id)),
                w,
                h,
                1,
                &px,
            )?;
            for (l, &v) in labels.data.iter_mut().zip(&m) {
                if v != 0 {
                    *l = k as u32 + 1;
                }
            }
            n += 1;
        }
        crate::data::image_io::write_label_png(&dir.join("labels.png"), &labels)?;
    }
    Ok(n)
}
