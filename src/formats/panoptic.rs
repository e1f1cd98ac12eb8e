//! COCO panoptic format: an RGB PNG per image whose pixel id is `R + 256 G + 256^2 B` (0 = void)
//! and a JSON `segments_info` list (`id`, `category_id`, `iscrowd`, `area`, `bbox`) per image.
//! Conversions to and from a semantic map (category id per pixel) plus an instance map.

use crate::data::image_io::{LabelMap, read_mask, write_label_png, write_png};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Semantic-map value of void pixels.
pub const SEMANTIC_VOID: u32 = 255;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: u32,
    pub category_id: u32,
    #[serde(default, deserialize_with = "bool_or_int")]
    pub iscrowd: bool,
    #[serde(default)]
    pub area: Option<u64>,
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
}

fn bool_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        _ => false,
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PanopticAnnotation {
    pub image_id: serde_json::Value,
    pub file_name: String,
    pub segments_info: Vec<SegmentInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PanopticCategory {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "bool_or_int")]
    pub isthing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<[u8; 3]>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PanopticJson {
    #[serde(default)]
    pub images: Vec<serde_json::Value>,
    pub annotations: Vec<PanopticAnnotation>,
    #[serde(default)]
    pub categories: Vec<PanopticCategory>,
}

pub fn read_json(path: &Path) -> Result<PanopticJson> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a COCO panoptic JSON: {e}", path.display()))
}

/// Reads a panoptic PNG as a segment-id map.
pub fn read_id_png(path: &Path) -> Result<LabelMap> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: corrupt panoptic PNG: {e}", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = img
        .pixels()
        .map(|p| p[0] as u32 + 256 * p[1] as u32 + 65536 * p[2] as u32)
        .collect();
    Ok(LabelMap {
        width: w,
        height: h,
        data,
    })
}

pub fn write_id_png(path: &Path, ids: &LabelMap) -> Result<()> {
    let px: Vec<u8> = ids
        .data
        .iter()
        .flat_map(|&v| {
            [
                (v & 255) as u8,
                ((v >> 8) & 255) as u8,
                ((v >> 16) & 255) as u8,
            ]
        })
        .collect();
    write_png(path, ids.width, ids.height, 3, &px)
}

/// Panoptic -> semantic map (category id, void 255) and instance map (1.. per thing segment,
/// 0 for stuff and void). Every id in the PNG must be in `segments_info`.
pub fn to_maps(
    ann: &PanopticAnnotation,
    ids: &LabelMap,
    png: &Path,
    things: &HashMap<u32, bool>,
) -> Result<(LabelMap, LabelMap)> {
    let info: HashMap<u32, &SegmentInfo> = ann.segments_info.iter().map(|s| (s.id, s)).collect();
    let mut sem = vec![SEMANTIC_VOID; ids.data.len()];
    let mut inst = vec![0u32; ids.data.len()];
    let mut inst_of: HashMap<u32, u32> = HashMap::new();
    for (i, &id) in ids.data.iter().enumerate() {
        if id == 0 {
            continue;
        }
        let Some(s) = info.get(&id) else {
            bail!(
                "{}: segment id {id} is in the PNG but not in segments_info of image {}",
                png.display(),
                ann.image_id
            );
        };
        if s.category_id >= SEMANTIC_VOID {
            bail!(
                "{}: category id {} does not fit a semantic map (void is {SEMANTIC_VOID})",
                png.display(),
                s.category_id
            );
        }
        sem[i] = s.category_id;
        if things.get(&s.category_id).copied().unwrap_or(true) {
            let n = inst_of.len() as u32 + 1;
            inst[i] = *inst_of.entry(id).or_insert(n);
        }
    }
    let mk = |data| LabelMap {
        width: ids.width,
        height: ids.height,
        data,
    };
    Ok((mk(sem), mk(inst)))
}

/// Semantic + instance maps -> panoptic id map and segments: one segment per stuff category, one
/// per (thing category, instance id); semantic value 255 is void.
pub fn from_maps(
    sem: &LabelMap,
    inst: &LabelMap,
    things: &HashMap<u32, bool>,
) -> Result<(LabelMap, Vec<SegmentInfo>)> {
    if (sem.width, sem.height) != (inst.width, inst.height) {
        bail!(
            "semantic map is {}x{} but instance map is {}x{}",
            sem.width,
            sem.height,
            inst.width,
            inst.height
        );
    }
    let mut key_to_id: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut ids = vec![0u32; sem.data.len()];
    let mut segs: Vec<SegmentInfo> = Vec::new();
    let w = sem.width;
    let mut boxes: Vec<[usize; 4]> = Vec::new();
    for (i, (&c, &k)) in sem.data.iter().zip(&inst.data).enumerate() {
        if c == SEMANTIC_VOID {
            continue;
        }
        let Some(&isthing) = things.get(&c) else {
            bail!("semantic class {c} is not in the categories")
        };
        let key = if isthing { (c, k) } else { (c, 0) };
        let next = segs.len() as u32 + 1;
        let id = *key_to_id.entry(key).or_insert(next);
        if id == next {
            segs.push(SegmentInfo {
                id,
                category_id: c,
                iscrowd: false,
                area: Some(0),
                bbox: None,
            });
            boxes.push([usize::MAX, usize::MAX, 0, 0]);
        }
        ids[i] = id;
        let s = &mut segs[id as usize - 1];
        s.area = Some(s.area.unwrap_or(0) + 1);
        let b = &mut boxes[id as usize - 1];
        let (x, y) = (i % w, i / w);
        *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    for (s, b) in segs.iter_mut().zip(&boxes) {
        s.bbox = Some([
            b[0] as f64,
            b[1] as f64,
            (b[2] - b[0] + 1) as f64,
            (b[3] - b[1] + 1) as f64,
        ]);
    }
    Ok((
        LabelMap {
            width: sem.width,
            height: sem.height,
            data: ids,
        },
        segs,
    ))
}

/// `panoptic-to-maps`: writes `OUT/semantic/<stem>.png` and `OUT/instance/<stem>.png`.
pub fn convert_to_maps(
    json: &Path,
    dir: &Path,
    categories: Option<&Path>,
    out: &Path,
) -> Result<usize> {
    let pj = read_json(json)?;
    let cats = match categories {
        Some(c) => read_categories(c)?,
        None => pj.categories.clone(),
    };
    let things: HashMap<u32, bool> = cats.iter().map(|c| (c.id, c.isthing)).collect();
    for ann in &pj.annotations {
        let png = dir.join(&ann.file_name);
        let ids = read_id_png(&png)?;
        let (sem, inst) = to_maps(ann, &ids, &png, &things)?;
        let stem = Path::new(&ann.file_name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        write_label_png(&out.join("semantic").join(format!("{stem}.png")), &sem)?;
        write_label_png(&out.join("instance").join(format!("{stem}.png")), &inst)?;
    }
    Ok(pj.annotations.len())
}

pub fn read_categories(path: &Path) -> Result<Vec<PanopticCategory>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a JSON list of categories: {e}", path.display()))
}

/// `maps-to-panoptic`: pairs `SEM/<stem>.png` with `INST/<stem>.png`, writes `OUT_DIR/<stem>.png`
/// and the JSON.
pub fn convert_from_maps(
    sem_dir: &Path,
    inst_dir: &Path,
    categories: &Path,
    out_json: &Path,
    out_dir: &Path,
) -> Result<usize> {
    let cats = read_categories(categories)?;
    let things: HashMap<u32, bool> = cats.iter().map(|c| (c.id, c.isthing)).collect();
    let mut anns = Vec::new();
    let mut images = Vec::new();
    for (i, (stem, sp)) in crate::data::folder::list_images(sem_dir)?
        .into_iter()
        .enumerate()
    {
        let ip = inst_dir.join(format!("{stem}.png"));
        if !ip.exists() {
            bail!(
                "{}: no instance map for semantic map {}",
                ip.display(),
                sp.display()
            );
        }
        let sem = read_mask(&sp)?;
        let inst = read_mask(&ip)?;
        let (ids, segs) =
            from_maps(&sem, &inst, &things).with_context(|| format!("{}", sp.display()))?;
        let file_name = format!("{stem}.png");
        write_id_png(&out_dir.join(&file_name), &ids)?;
        // COCO file stems are the zero-padded image id; other names get sequential ids.
        let id = stem.parse::<u64>().unwrap_or(i as u64 + 1);
        let image_id = serde_json::json!(id);
        images.push(serde_json::json!({"id": id, "file_name": file_name, "height": sem.height, "width": sem.width}));
        anns.push(PanopticAnnotation {
            image_id,
            file_name,
            segments_info: segs,
        });
    }
    let n = anns.len();
    let pj = PanopticJson {
        images,
        annotations: anns,
        categories: cats,
    };
    crate::io::write_json(out_json, &pj)?;
    Ok(n)
}

/// The `segments_info` of a segment-id map: for each `(id, category_id)`, its area and its
/// bbox `[x, y, w, h]` in the map (segments absent from the map are left out).
pub fn segments_of(ids: &LabelMap, segments: &[(u32, u32)]) -> Vec<SegmentInfo> {
    let mut stats: HashMap<u32, (u64, [usize; 4])> = HashMap::new();
    let w = ids.width;
    for (i, &id) in ids.data.iter().enumerate() {
        if id == 0 {
            continue;
        }
        let (x, y) = (i % w, i / w);
        let e = stats
            .entry(id)
            .or_insert((0, [usize::MAX, usize::MAX, 0, 0]));
        e.0 += 1;
        e.1 = [e.1[0].min(x), e.1[1].min(y), e.1[2].max(x), e.1[3].max(y)];
    }
    segments
        .iter()
        .filter_map(|&(id, category_id)| {
            let (area, b) = stats.get(&id)?;
            Some(SegmentInfo {
                id,
                category_id,
                iscrowd: false,
                area: Some(*area),
                bbox: Some([
                    b[0] as f64,
                    b[1] as f64,
                    (b[2] - b[0] + 1) as f64,
                    (b[3] - b[1] + 1) as f64,
                ]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_through_panoptic() {
        let things: HashMap<u32, bool> = [(1, true), (7, false)].into_iter().collect();
        let sem = LabelMap {
            width: 4,
            height: 2,
            data: vec![1, 1, 7, 255, 1, 7, 7, 1],
        };
        let inst = LabelMap {
            width: 4,
            height: 2,
            data: vec![1, 1, 0, 0, 2, 0, 0, 2],
        };
        let (ids, segs) = from_maps(&sem, &inst, &things).unwrap();
        assert_eq!(segs.len(), 3);
        let ann = PanopticAnnotation {
            image_id: serde_json::json!(1),
            file_name: "x.png".into(),
            segments_info: segs,
        };
        let (sem2, inst2) = to_maps(&ann, &ids, Path::new("x.png"), &things).unwrap();
        assert_eq!(sem2, sem);
        assert_eq!(inst2.data, vec![1, 1, 0, 0, 2, 0, 0, 2]);
        let areas: Vec<u64> = ann.segments_info.iter().map(|s| s.area.unwrap()).collect();
        assert_eq!(areas, vec![2, 3, 2]);
    }
}
