//! Writing tracking results as the VOS tools expect them: per frame an indexed PNG with the
//! DAVIS palette holding object ids (where objects overlap the smaller id wins, as the
//! official `tools/vos_inference.py` paints them), optionally one 0/255 PNG per object and an
//! overlay of the frame, and `result.json` with every object's object-score logit and area.

use super::frames::Frame;
use super::predictor::FrameResult;
use crate::data::image_io::{LabelMap, write_palette_png, write_png};
use crate::viz::overlay::overlay;
use crate::viz::palette::voc_palette;
use anyhow::{Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The object-id map of a frame: ids painted from the largest to the smallest.
pub fn label_map(r: &FrameResult, height: usize, width: usize) -> LabelMap {
    let mut data = vec![0u32; height * width];
    let mut objs: Vec<_> = r.objects.iter().collect();
    objs.sort_by_key(|o| std::cmp::Reverse(o.obj_id));
    for o in objs {
        for (d, &m) in data.iter_mut().zip(&o.mask) {
            if m != 0 {
                *d = o.obj_id;
            }
        }
    }
    LabelMap {
        width,
        height,
        data,
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct ObjectRecord {
    pub obj_id: u32,
    pub object_score: f32,
    pub area: usize,
}

#[derive(Serialize, Clone, Debug)]
pub struct FrameRecord {
    pub frame: usize,
    pub name: String,
    pub objects: Vec<ObjectRecord>,
}

/// Writes a video's results into a folder as frames arrive.
pub struct VosWriter {
    pub dir: PathBuf,
    pub per_object: bool,
    pub overlay: bool,
    pub records: Vec<FrameRecord>,
}

impl VosWriter {
    pub fn new(dir: &Path, per_object: bool, overlay: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            per_object,
            overlay,
            records: Vec::new(),
        })
    }

    /// Writes one frame (`stem` names the files; `frame` is needed for overlays).
    pub fn write(
        &mut self,
        r: &FrameResult,
        stem: &str,
        size: (usize, usize),
        frame: Option<&Frame>,
    ) -> Result<()> {
        let (h, w) = size;
        if let Some(o) = r.objects.iter().find(|o| o.obj_id == 0 || o.obj_id > 255) {
            bail!(
                "object id {} cannot be written to an indexed PNG (1 to 255)",
                o.obj_id
            );
        }
        let labels = label_map(r, h, w);
        let palette = voc_palette(256);
        write_palette_png(&self.dir.join(format!("{stem}.png")), &labels, &palette)?;
        if self.per_object {
            for o in &r.objects {
                let d = self.dir.join(o.obj_id.to_string());
                std::fs::create_dir_all(&d)?;
                let px: Vec<u8> = o
                    .mask
                    .iter()
                    .map(|&m| if m != 0 { 255 } else { 0 })
                    .collect();
                write_png(&d.join(format!("{stem}.png")), w, h, 1, &px)?;
            }
        }
        if self.overlay
            && let Some(f) = frame
        {
            let d = self.dir.join("overlay");
            std::fs::create_dir_all(&d)?;
            overlay(&f.rgb, &labels, &palette, 0.5, None)
                .save_png(&d.join(format!("{stem}.png")))?;
        }
        self.records.push(FrameRecord {
            frame: r.frame,
            name: stem.to_string(),
            objects: r
                .objects
                .iter()
                .map(|o| ObjectRecord {
                    obj_id: o.obj_id,
                    object_score: o.object_score,
                    area: o.area,
                })
                .collect(),
        });
        Ok(())
    }
}
