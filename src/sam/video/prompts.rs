//! Video prompts as users give them: a JSON list of `{"frame", "obj_id", "points", "labels",
//! "box", "mask"}` (each entry one `add_new_points_or_box` / `add_new_mask` call, in order),
//! `FRAME:OBJ:X,Y[:LABEL]` clicks and `FRAME:OBJ:X1,Y1,X2,Y2` boxes, or an indexed first-frame
//! mask (every non-zero value an object, as the semi-supervised VOS protocol gives them).

use super::predictor::{FrameResult, PointsOrBox, VideoPredictor};
use crate::data::image_io::read_mask;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::Path;

/// One call on the predictor.
#[derive(Clone, Debug, PartialEq)]
pub enum VideoPrompt {
    Points {
        frame: usize,
        obj_id: u32,
        points: Vec<(f64, f64, i32)>,
        bbox: Option<[f64; 4]>,
    },
    Mask {
        frame: usize,
        obj_id: u32,
        /// `height x width`, non-zero = object.
        mask: Vec<u8>,
        width: usize,
        height: usize,
        /// Where the mask came from (for errors).
        source: String,
    },
}

impl VideoPrompt {
    pub fn frame(&self) -> usize {
        match self {
            Self::Points { frame, .. } | Self::Mask { frame, .. } => *frame,
        }
    }

    pub fn obj_id(&self) -> u32 {
        match self {
            Self::Points { obj_id, .. } | Self::Mask { obj_id, .. } => *obj_id,
        }
    }

    /// Adds the prompt to the predictor.
    pub fn apply(&self, p: &mut VideoPredictor) -> Result<FrameResult> {
        match self {
            Self::Points {
                frame,
                obj_id,
                points,
                bbox,
            } => p.add_points(
                *frame,
                *obj_id,
                &PointsOrBox {
                    points: points.clone(),
                    bbox: *bbox,
                    clear_old_points: true,
                },
            ),
            Self::Mask {
                frame,
                obj_id,
                mask,
                width,
                height,
                source,
            } => {
                let (w, h) = (p.frames.width, p.frames.height);
                if (*width, *height) != (w, h) {
                    bail!("{source}: the mask is {width}x{height}, the video's frames are {w}x{h}");
                }
                p.add_mask(*frame, *obj_id, mask)
                    .with_context(|| source.clone())
            }
        }
    }
}

fn check_obj_id(obj_id: i64, what: &str) -> Result<u32> {
    if obj_id <= 0 || obj_id > 255 {
        bail!(
            "{what}: object id {obj_id}: ids run from 1 to 255 (0 is the background of the indexed output)"
        );
    }
    Ok(obj_id as u32)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPrompt {
    frame: i64,
    obj_id: i64,
    #[serde(default)]
    points: Option<Vec<[f64; 2]>>,
    #[serde(default)]
    labels: Option<Vec<i32>>,
    #[serde(default, rename = "box")]
    bbox: Option<[f64; 4]>,
    /// A PNG path (relative to the JSON file) or rows of 0 / 1.
    #[serde(default)]
    mask: Option<serde_json::Value>,
}

/// Reads a prompts file.
pub fn read_json(path: &Path) -> Result<Vec<VideoPrompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let list: Vec<JsonPrompt> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a list of {{\"frame\", \"obj_id\", \"points\", \"labels\", \"box\", \"mask\"}}: {e}",
            path.display()
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    list.into_iter()
        .enumerate()
        .map(|(i, j)| {
            let what = format!("{} entry {i}", path.display());
            if j.frame < 0 {
                bail!("{what}: frame {} is negative", j.frame);
            }
            let frame = j.frame as usize;
            let obj_id = check_obj_id(j.obj_id, &what)?;
            if let Some(m) = j.mask {
                if j.points.is_some() || j.bbox.is_some() {
                    bail!("{what}: a mask prompt cannot also have points or a box");
                }
                return mask_prompt(&m, &base, frame, obj_id, &what);
            }
            let points = match (j.points, j.labels) {
                (Some(p), Some(l)) if p.len() == l.len() => {
                    p.iter().zip(&l).map(|(xy, &l)| (xy[0], xy[1], l)).collect()
                }
                (Some(p), Some(l)) => bail!("{what}: {} points but {} labels", p.len(), l.len()),
                (None, None) => Vec::new(),
                _ => bail!("{what}: points and labels go together"),
            };
            if points.is_empty() && j.bbox.is_none() {
                bail!("{what}: no points, box or mask");
            }
            Ok(VideoPrompt::Points {
                frame,
                obj_id,
                points,
                bbox: j.bbox,
            })
        })
        .collect()
}

fn mask_prompt(
    m: &serde_json::Value,
    base: &Path,
    frame: usize,
    obj_id: u32,
    what: &str,
) -> Result<VideoPrompt> {
    match m {
        serde_json::Value::String(p) => {
            let path = base.join(p);
            let l = read_mask(&path)?;
            Ok(VideoPrompt::Mask {
                frame,
                obj_id,
                mask: l.data.iter().map(|&v| (v != 0) as u8).collect(),
                width: l.width,
                height: l.height,
                source: path.display().to_string(),
            })
        }
        serde_json::Value::Array(rows) => {
            let rows: Vec<Vec<u8>> = rows
                .iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| {
                            r.iter()
                                .map(|v| (v.as_f64().unwrap_or(0.0) != 0.0) as u8)
                                .collect()
                        })
                        .ok_or_else(|| anyhow::anyhow!("{what}: mask rows must be lists of 0 / 1"))
                })
                .collect::<Result<_>>()?;
            let height = rows.len();
            let width = rows.first().map_or(0, |r| r.len());
            if height == 0 || width == 0 || rows.iter().any(|r| r.len() != width) {
                bail!("{what}: the mask must be a non-empty rectangle of rows");
            }
            Ok(VideoPrompt::Mask {
                frame,
                obj_id,
                mask: rows.concat(),
                width,
                height,
                source: what.to_string(),
            })
        }
        _ => bail!("{what}: \"mask\" must be a PNG path or rows of 0 / 1"),
    }
}

fn split_head(s: &str, what: &str) -> Result<(usize, u32, Vec<String>)> {
    let parts: Vec<String> = s.split(':').map(str::to_string).collect();
    if parts.len() < 3 {
        bail!("{what} {s:?}: expected FRAME:OBJ:...");
    }
    let frame = parts[0]
        .trim()
        .parse::<usize>()
        .map_err(|_| anyhow::anyhow!("{what} {s:?}: frame {:?} is not a frame index", parts[0]))?;
    let obj = parts[1]
        .trim()
        .parse::<i64>()
        .map_err(|_| anyhow::anyhow!("{what} {s:?}: object {:?} is not a number", parts[1]))?;
    let obj_id = check_obj_id(obj, &format!("{what} {s:?}"))?;
    Ok((frame, obj_id, parts[2..].to_vec()))
}

fn numbers(s: &str, n: usize, what: &str) -> Result<Vec<f64>> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("{what}: {s:?} is not {n} comma-separated numbers"))?;
    if v.len() != n || v.iter().any(|x| !x.is_finite()) {
        bail!("{what}: {s:?} is not {n} comma-separated numbers");
    }
    Ok(v)
}

/// `--box` and `--point` flags: one call per frame and object (a box with that frame's and
/// object's clicks), in the order each pair first appears, boxes' pairs first.
pub fn from_flags(boxes: &[String], points: &[String]) -> Result<Vec<VideoPrompt>> {
    let mut calls: Vec<VideoPrompt> = Vec::new();
    let slot = |frame: usize, obj_id: u32, calls: &mut Vec<VideoPrompt>| -> usize {
        match calls
            .iter()
            .position(|c| c.frame() == frame && c.obj_id() == obj_id)
        {
            Some(i) => i,
            None => {
                calls.push(VideoPrompt::Points {
                    frame,
                    obj_id,
                    points: Vec::new(),
                    bbox: None,
                });
                calls.len() - 1
            }
        }
    };
    for b in boxes {
        let (frame, obj_id, rest) = split_head(b, "--box")?;
        if rest.len() != 1 {
            bail!("--box {b:?}: expected FRAME:OBJ:X1,Y1,X2,Y2");
        }
        let v = numbers(&rest[0], 4, &format!("--box {b:?}"))?;
        if v[2] < v[0] || v[3] < v[1] {
            bail!("--box {b:?}: the second corner must be right of and below the first");
        }
        let i = slot(frame, obj_id, &mut calls);
        if let VideoPrompt::Points { bbox, .. } = &mut calls[i] {
            if bbox.is_some() {
                bail!("--box {b:?}: a second box for frame {frame}, object {obj_id}");
            }
            *bbox = Some([v[0], v[1], v[2], v[3]]);
        }
    }
    for p in points {
        let (frame, obj_id, rest) = split_head(p, "--point")?;
        let label = match rest.len() {
            1 => 1,
            2 => match rest[1].trim() {
                "1" => 1,
                "0" => 0,
                l => bail!("--point {p:?}: label {l:?} is not 1 (object) or 0 (background)"),
            },
            _ => bail!("--point {p:?}: expected FRAME:OBJ:X,Y[:LABEL]"),
        };
        let v = numbers(&rest[0], 2, &format!("--point {p:?}"))?;
        let i = slot(frame, obj_id, &mut calls);
        if let VideoPrompt::Points { points, .. } = &mut calls[i] {
            points.push((v[0], v[1], label));
        }
    }
    Ok(calls)
}

/// An indexed mask on `frame`: one mask prompt per non-zero value, by increasing id. A mask
/// holding only 0 and 255 (DAVIS 2016's single objects) is object 1.
pub fn from_indexed_mask(path: &Path, frame: usize) -> Result<Vec<VideoPrompt>> {
    let l = read_mask(path)?;
    let mut ids: Vec<u32> = l.data.iter().copied().filter(|&v| v != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!(
            "{}: the mask has no object (every pixel is 0)",
            path.display()
        );
    }
    let binary = ids == [255];
    Ok(ids
        .into_iter()
        .map(|id| VideoPrompt::Mask {
            frame,
            obj_id: if binary { 1 } else { id },
            mask: l.data.iter().map(|&v| (v == id) as u8).collect(),
            width: l.width,
            height: l.height,
            source: path.display().to_string(),
        })
        .collect())
}
