//! SAM 2's video predictor (`SAM2VideoPredictor`), on the host engine: prompts on frames,
//! then propagation through the video with a memory of past frames, per object.
//!
//! As the reference: an object's prompts on a frame it has not been tracked on make a
//! conditioning frame (decoded from the frame's features plus `no_mem_embed`, multimask for
//! a single click, masks given as the output directly); prompts on a tracked frame correct it
//! (its features conditioned on the memory, the previous mask logits fed back as a mask
//! prompt). Memories of prompted frames are encoded when propagation starts, from the
//! (hole-filled) low-resolution logits upsampled and binarised. Propagation starts at the
//! earliest conditioning frame, forward or in reverse; frames with prompts keep their output,
//! the others are tracked: the memory attention over the object's memories, the heads with
//! multimask and selection by predicted IoU, the object score gating, the memory of the frame
//! (the logits through the sigmoid) stored in bfloat16. Objects are independent (no overlap
//! constraint, as the official builder), so each runs alone on the frame's shared features.
//! Holes of at most `fill_hole_area` low-resolution pixels are filled (logit 0.1) in outputs.
//!
//! Beyond the reference: frames are read when needed and only the current frame's features
//! are kept; with [`Retention::Window`] the memories of frames no later frame can select are
//! dropped as tracking moves on, so memory stays flat however long the video.

use super::frames::{Frames, model_input};
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::models::sam2::model::{FrameFeatures, Sam2};
use crate::models::sam2::position_encoding::sine;
use crate::models::sam2::tracking_heads::{
    FrameOutput, MAX_OBJ_PTRS, NUM_MASKMEM, StoredFrame, TrackingParts, round_bf16,
};
use crate::nn::Weights;
use crate::ops::Precision;
use crate::ops::layout::transpose;
use crate::ops::resize::{bilinear_antialias, bilinear_plane};
use crate::sam::amg::components;
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A SAM 2 checkpoint with its video parts.
pub struct Sam2Video {
    pub sam: Sam2,
    pub parts: TrackingParts,
}

impl Sam2Video {
    /// Loads a SAM 2 checkpoint (`.pt` or safetensors) at input size `image_size` (1024 for the
    /// released models).
    pub fn load(path: &Path, image_size: usize) -> Result<Self> {
        Self::load_with(path, image_size, Precision::F32)
    }

    /// [`load`](Self::load) with the dense layers, convolutions and attention products
    /// computing in `precision`.
    pub fn load_with(path: &Path, image_size: usize, precision: Precision) -> Result<Self> {
        let w = NamedTensors::read(path)?;
        Self::from_tensors_with(&w, image_size, precision)
            .with_context(|| format!("loading SAM 2 from {}", path.display()))
    }

    pub fn from_tensors(w: &NamedTensors, image_size: usize) -> Result<Self> {
        Self::from_tensors_with(w, image_size, Precision::F32)
    }

    pub fn from_tensors_with(
        w: &NamedTensors,
        image_size: usize,
        precision: Precision,
    ) -> Result<Self> {
        let sam = Sam2::from_tensors_sized_with(w, image_size, precision)?;
        let root = Weights::new(w).with_precision(precision);
        let parts = TrackingParts::load(&root)?;
        root.finish("SAM 2 video (memory attention, memory encoder, object pointers)")?;
        Ok(Self { sam, parts })
    }
}

/// How long tracked frames' memories are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Every tracked frame's output, as the reference (memory grows with the video).
    All,
    /// Only what a later frame of this propagation (or a reverse one from a prompted frame) can
    /// select: the 6 frames behind the current one and around prompted frames, and object
    /// pointers for 15. Correcting a frame whose output was dropped proceeds without feeding
    /// its previous logits back.
    Window,
}

#[derive(Clone, Copy, Debug)]
pub struct VideoConfig {
    /// Fill holes of at most this many low-resolution pixels in the output masks (the
    /// official builder's 8; 0 = off).
    pub fill_hole_area: usize,
    pub retention: Retention,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            fill_hole_area: 8,
            retention: Retention::Window,
        }
    }
}

/// A frame's stored output for one object (`compact_current_out`).
struct FrameOut {
    /// Memory (empty until encoded, or once dropped), position encoding and pointer.
    stored: StoredFrame,
    /// `[4G, 4G]` logits, hole-filled (empty once dropped).
    pred_masks: Vec<f32>,
    object_score: f32,
}

#[derive(Default)]
struct ObjectState {
    id: u32,
    /// Model-frame points per frame (for adding points without clearing the old ones).
    points: BTreeMap<usize, Vec<PointPrompt>>,
    cond: BTreeMap<usize, FrameOut>,
    non_cond: BTreeMap<usize, FrameOut>,
    /// Outputs of prompts since the last propagation, by whether they condition.
    temp_cond: BTreeMap<usize, FrameOut>,
    temp_non_cond: BTreeMap<usize, FrameOut>,
    /// Frames tracked, and whether in reverse.
    tracked: BTreeMap<usize, bool>,
}

impl ObjectState {
    fn latest(&self, frame: usize, is_cond: bool) -> Option<&FrameOut> {
        let temp = if is_cond {
            &self.temp_cond
        } else {
            &self.temp_non_cond
        };
        temp.get(&frame)
            .or_else(|| self.cond.get(&frame))
            .or_else(|| self.non_cond.get(&frame))
    }
}

/// One object on one frame, at the video's resolution.
#[derive(Clone, Debug)]
pub struct ObjectMask {
    pub obj_id: u32,
    /// `height x width`, 1 where the object is.
    pub mask: Vec<u8>,
    pub object_score: f32,
    pub area: usize,
}

/// Every object's mask on a frame.
#[derive(Clone, Debug)]
pub struct FrameResult {
    pub frame: usize,
    pub objects: Vec<ObjectMask>,
}

/// Prompts for [`VideoPredictor::add_points`], in video pixels.
#[derive(Clone, Debug, Default)]
pub struct PointsOrBox {
    /// `(x, y, label)`: 1 foreground, 0 background.
    pub points: Vec<(f64, f64, i32)>,
    pub bbox: Option<[f64; 4]>,
    /// Drop the frame's earlier points for the object (the reference's default).
    pub clear_old_points: bool,
}

struct Cached {
    frame: usize,
    features: FrameFeatures,
    /// The stride-16 features `[C, G, G]` (for the memory encoder).
    channel_major: Vec<f32>,
}

pub struct VideoPredictor<'m> {
    model: &'m Sam2Video,
    pub frames: Frames,
    cfg: VideoConfig,
    objects: Vec<ObjectState>,
    cache: Option<Cached>,
    /// The stride-16 position encoding as rows `[G * G, C]`.
    curr_pos: Vec<f32>,
    /// The memories' position encoding (the same for every frame).
    mem_pos: Option<Arc<Vec<f32>>>,
    /// How many times the image encoder ran (for tests and progress).
    pub encoder_runs: usize,
}

impl<'m> VideoPredictor<'m> {
    /// `init_state`: a video's frames, read as they are needed.
    pub fn new(model: &'m Sam2Video, frames: Frames, cfg: VideoConfig) -> Result<Self> {
        if frames.is_empty() {
            bail!("the video has no frames");
        }
        let g = model.sam.embedding_size();
        let c = model.sam.neck.d_model;
        Ok(Self {
            model,
            frames,
            cfg,
            objects: Vec::new(),
            cache: None,
            curr_pos: transpose(&sine(c, g, g), c, g * g),
            mem_pos: None,
            encoder_runs: 0,
        })
    }

    pub fn num_frames(&self) -> usize {
        self.frames.len()
    }

    /// Object ids in the order they were first prompted.
    pub fn obj_ids(&self) -> Vec<u32> {
        self.objects.iter().map(|o| o.id).collect()
    }

    fn obj_idx(&mut self, obj_id: u32) -> usize {
        match self.objects.iter().position(|o| o.id == obj_id) {
            Some(i) => i,
            None => {
                self.objects.push(ObjectState {
                    id: obj_id,
                    ..Default::default()
                });
                self.objects.len() - 1
            }
        }
    }

    fn check_frame(&self, frame: usize) -> Result<()> {
        if frame >= self.num_frames() {
            bail!(
                "a prompt is on frame {frame}, but the video has {} frames (0 to {})",
                self.num_frames(),
                self.num_frames() - 1
            );
        }
        Ok(())
    }

    /// `add_new_points_or_box`: clicks and / or a box (its corners first, labels 2 / 3) for an
    /// object on a frame. Returns the frame's masks of every object with an output there.
    pub fn add_points(
        &mut self,
        frame: usize,
        obj_id: u32,
        prompt: &PointsOrBox,
    ) -> Result<FrameResult> {
        self.check_frame(frame)?;
        if prompt.points.is_empty() && prompt.bbox.is_none() {
            bail!("frame {frame}, object {obj_id}: a prompt needs points or a box");
        }
        if prompt.bbox.is_some() && !prompt.clear_old_points {
            bail!("frame {frame}, object {obj_id}: a box must come with clear_old_points");
        }
        let (h, w) = (self.frames.height as f32, self.frames.width as f32);
        let s = self.model.sam.image_size as f32;
        for &(x, y, l) in &prompt.points {
            if !(-1..=1).contains(&l) {
                bail!("frame {frame}, object {obj_id}: point label {l} is not 1, 0 or -1");
            }
            if !x.is_finite() || !y.is_finite() {
                bail!("frame {frame}, object {obj_id}: a point is not a finite number");
            }
        }
        // `points / [W, H] * image_size` in float32.
        let map = |x: f64, y: f64, label: i32| PointPrompt {
            x: (x as f32 / w * s) as f64,
            y: (y as f32 / h * s) as f64,
            label,
        };
        let mut new: Vec<PointPrompt> = Vec::new();
        if let Some([x0, y0, x1, y1]) = prompt.bbox {
            new.push(map(x0, y0, 2));
            new.push(map(x1, y1, 3));
        }
        new.extend(prompt.points.iter().map(|&(x, y, l)| map(x, y, l)));
        let oi = self.obj_idx(obj_id);
        let o = &mut self.objects[oi];
        let mut points = if prompt.clear_old_points {
            Vec::new()
        } else {
            o.points.get(&frame).cloned().unwrap_or_default()
        };
        points.extend(new);
        o.points.insert(frame, points.clone());
        self.prompt_frame(oi, frame, |prev| Step::Points(&points, prev))
    }

    /// `add_new_mask`: an object's mask (`height x width` of the video, non-zero = object) on a
    /// frame, used as the frame's output.
    pub fn add_mask(&mut self, frame: usize, obj_id: u32, mask: &[u8]) -> Result<FrameResult> {
        self.check_frame(frame)?;
        let (h, w) = (self.frames.height, self.frames.width);
        if mask.len() != h * w {
            bail!(
                "frame {frame}, object {obj_id}: the mask has {} pixels, the video's frames are {w}x{h}",
                mask.len()
            );
        }
        let s = self.model.sam.image_size;
        let m: Vec<f32> = mask.iter().map(|&v| (v != 0) as u8 as f32).collect();
        let m = if (h, w) != (s, s) {
            bilinear_antialias(&m, 1, (h, w), (s, s))
                .into_iter()
                .map(|v| (v >= 0.5) as u8 as f32)
                .collect()
        } else {
            m
        };
        let oi = self.obj_idx(obj_id);
        self.objects[oi].points.remove(&frame);
        self.prompt_frame(oi, frame, |_| Step::Mask(&m))
    }

    /// Runs a prompt on a frame: a conditioning frame if the object was not tracked there (else
    /// a correction, in the direction it was tracked), the output kept until propagation.
    /// `step` gets the frame's latest logits (clamped to +-32) to feed back with points.
    fn prompt_frame<'s>(
        &mut self,
        oi: usize,
        frame: usize,
        step: impl FnOnce(Option<Vec<f32>>) -> Step<'s>,
    ) -> Result<FrameResult> {
        let o = &self.objects[oi];
        let is_init = !o.tracked.contains_key(&frame);
        let reverse = o.tracked.get(&frame).copied().unwrap_or(false);
        let is_cond = is_init;
        let prev = o
            .latest(frame, is_cond)
            .filter(|p| !p.pred_masks.is_empty())
            .map(|p| p.pred_masks.iter().map(|v| v.clamp(-32.0, 32.0)).collect());
        let out = self.run_frame(oi, frame, is_init, step(prev), reverse, false)?;
        let o = &mut self.objects[oi];
        if is_cond {
            o.temp_cond.insert(frame, out);
        } else {
            o.temp_non_cond.insert(frame, out);
        }
        Ok(self.frame_result(frame, is_cond))
    }

    /// The features of a frame, from the one-frame cache or the image encoder.
    fn features(&mut self, frame: usize) -> Result<()> {
        if self.cache.as_ref().is_some_and(|c| c.frame == frame) {
            return Ok(());
        }
        self.cache = None;
        let f = self.frames.read(frame)?;
        let input = model_input(&f, self.model.sam.image_size);
        drop(f);
        let features = self.model.sam.encode_features(&input)?;
        let (c, g) = (self.model.sam.neck.d_model, self.model.sam.embedding_size());
        let channel_major = transpose(&features.rows, g * g, c);
        self.encoder_runs += 1;
        self.cache = Some(Cached {
            frame,
            features,
            channel_major,
        });
        Ok(())
    }

    /// `_run_single_frame_inference` for one object.
    fn run_frame(
        &mut self,
        oi: usize,
        frame: usize,
        is_init: bool,
        step: Step,
        reverse: bool,
        run_mem_encoder: bool,
    ) -> Result<FrameOut> {
        self.features(frame)?;
        let m = self.model;
        let (sam, parts) = (&m.sam, &m.parts);
        let cached = self.cache.as_ref().expect("filled above");
        let f = &cached.features;
        let size = (self.frames.height, self.frames.width);
        let g = sam.embedding_size();
        let (out, from_points): (FrameOutput, bool) = match &step {
            // `use_mask_input_as_output_without_sam`: on the raw features.
            Step::Mask(mask) => {
                let e = sam.embedding(&f.rows, f.high_res.clone(), size, false);
                (parts.mask_as_output(sam, &e, mask)?, false)
            }
            Step::Points(..) | Step::Track => {
                let e = if is_init {
                    sam.embedding(&f.rows, f.high_res.clone(), size, true)
                } else {
                    let o = &self.objects[oi];
                    let cond: Vec<(usize, &StoredFrame)> =
                        o.cond.iter().map(|(t, x)| (*t, &x.stored)).collect();
                    let rows = parts.condition(
                        frame,
                        &f.rows,
                        &self.curr_pos,
                        g,
                        &cond,
                        &|t| o.non_cond.get(&t).map(|x| &x.stored),
                        self.frames.len(),
                        reverse,
                    )?;
                    sam.embedding(&rows, f.high_res.clone(), size, false)
                };
                let (points, prev): (&[PointPrompt], Option<&[f32]>) = match &step {
                    Step::Points(p, prev) => (p, prev.as_deref()),
                    _ => (&[], None),
                };
                // Every official config: multimask for at most one click, on conditioning
                // frames and while tracking.
                let multimask = points.len() <= 1;
                (
                    parts.forward_heads(sam, &e, points, prev, multimask)?,
                    matches!(step, Step::Points(..)),
                )
            }
        };
        let memory = if run_mem_encoder {
            let mut mem = parts.encode_memory(
                &cached.channel_major,
                g,
                &out.high_res_mask,
                out.object_score,
                from_points,
            )?;
            round_bf16(&mut mem.features);
            let pos = self.shared_pos(mem.pos);
            (mem.features, pos)
        } else {
            (Vec::new(), self.shared_pos(Vec::new()))
        };
        let mut pred_masks = out.low_res_mask().to_vec();
        let l = 4 * g;
        fill_holes(&mut pred_masks, l, self.cfg.fill_hole_area);
        Ok(FrameOut {
            stored: StoredFrame {
                memory: memory.0,
                pos: memory.1,
                obj_ptr: out.obj_ptr,
            },
            pred_masks,
            object_score: out.object_score,
        })
    }

    fn shared_pos(&mut self, pos: Vec<f32>) -> Arc<Vec<f32>> {
        match &self.mem_pos {
            Some(p) => p.clone(),
            None if pos.is_empty() => Arc::new(Vec::new()),
            None => {
                let p = Arc::new(pos);
                self.mem_pos = Some(p.clone());
                p
            }
        }
    }

    /// The frame's masks for every object with an output there (the latest one).
    fn frame_result(&self, frame: usize, is_cond: bool) -> FrameResult {
        let objects = self
            .objects
            .iter()
            .filter_map(|o| {
                let out = o.latest(frame, is_cond)?;
                Some(self.video_mask(o.id, out))
            })
            .collect();
        FrameResult { frame, objects }
    }

    /// Low-resolution logits to the video's size (bilinear), thresholded at 0.
    fn video_mask(&self, obj_id: u32, out: &FrameOut) -> ObjectMask {
        let (h, w) = (self.frames.height, self.frames.width);
        let l = 4 * self.model.sam.embedding_size();
        let up = bilinear_plane(&out.pred_masks, l, (l, l), (h, w), false);
        let mask: Vec<u8> = up.iter().map(|&v| (v > 0.0) as u8).collect();
        let area = mask.iter().map(|&v| v as usize).sum();
        ObjectMask {
            obj_id,
            mask,
            object_score: out.object_score,
            area,
        }
    }

    /// `propagate_in_video_preflight`: encodes the memories of prompted frames and moves them
    /// into the objects' outputs.
    fn preflight(&mut self) -> Result<()> {
        if self.objects.is_empty() {
            bail!("no object has a prompt: add points, a box or a mask first");
        }
        let s = self.model.sam.image_size;
        let l = 4 * self.model.sam.embedding_size();
        // Every object's new outputs, frame by frame (the cached frame first), so that each
        // frame is encoded once.
        let mut pending = Vec::new();
        for (oi, o) in self.objects.iter_mut().enumerate() {
            for (is_cond, temp) in [(false, &mut o.temp_non_cond), (true, &mut o.temp_cond)] {
                pending.extend(
                    std::mem::take(temp)
                        .into_iter()
                        .map(|(f, out)| (f, oi, is_cond, out)),
                );
            }
        }
        let cached = self.cache.as_ref().map(|c| c.frame);
        pending.sort_by_key(|&(f, oi, is_cond, _)| (Some(f) != cached, f, oi, is_cond));
        for (frame, oi, is_cond, mut out) in pending {
            if out.stored.memory.is_empty() {
                let high = bilinear_plane(&out.pred_masks, l, (l, l), (s, s), false);
                self.features(frame)?;
                let cached = self.cache.as_ref().expect("filled above");
                let mut mem = self.model.parts.encode_memory(
                    &cached.channel_major,
                    l / 4,
                    &high,
                    out.object_score,
                    true,
                )?;
                round_bf16(&mut mem.features);
                out.stored.memory = mem.features;
                out.stored.pos = self.shared_pos(mem.pos);
            }
            let o = &mut self.objects[oi];
            if is_cond {
                o.cond.insert(frame, out);
            } else {
                o.non_cond.insert(frame, out);
            }
        }
        for oi in 0..self.objects.len() {
            let o = &mut self.objects[oi];
            if o.cond.is_empty() {
                bail!(
                    "object {} has no prompt on a frame it was not tracked on: add points, a box or a mask first",
                    o.id
                );
            }
            let cond: Vec<usize> = o.cond.keys().copied().collect();
            for t in cond {
                o.non_cond.remove(&t);
            }
        }
        Ok(())
    }

    /// `propagate_in_video`: from `start` (default: the earliest prompted frame) over at most
    /// `max_frames` more frames (default: all), forward or in reverse; `on_frame` gets each
    /// frame's masks as soon as they are made.
    pub fn propagate(
        &mut self,
        start: Option<usize>,
        max_frames: Option<usize>,
        reverse: bool,
        on_frame: &mut dyn FnMut(FrameResult) -> Result<()>,
    ) -> Result<()> {
        self.preflight()?;
        let n = self.num_frames();
        let start = match start {
            Some(s) => {
                self.check_frame(s)?;
                s
            }
            None => self
                .objects
                .iter()
                .flat_map(|o| o.cond.keys().copied())
                .min()
                .expect("every object has a conditioning frame"),
        };
        let max = max_frames.unwrap_or(n);
        let order: Vec<usize> = if reverse {
            let end = start.saturating_sub(max);
            if start > 0 {
                (end..=start).rev().collect()
            } else {
                Vec::new()
            }
        } else {
            let end = (start + max).min(n - 1);
            (start..=end).collect()
        };
        for frame in order {
            for oi in 0..self.objects.len() {
                if !self.objects[oi].cond.contains_key(&frame) {
                    let out = self.run_frame(oi, frame, false, Step::Track, reverse, true)?;
                    self.objects[oi].non_cond.insert(frame, out);
                }
                self.objects[oi].tracked.insert(frame, reverse);
            }
            let objects = self
                .objects
                .iter()
                .map(|o| {
                    let out = o
                        .cond
                        .get(&frame)
                        .or_else(|| o.non_cond.get(&frame))
                        .expect("made above");
                    self.video_mask(o.id, out)
                })
                .collect();
            on_frame(FrameResult { frame, objects })?;
            if self.cfg.retention == Retention::Window {
                self.release(frame);
            }
        }
        Ok(())
    }

    /// Drops what no later frame can select: memories and logits of tracked frames more than
    /// 6 frames from the current one and from every prompted frame, their pointers beyond 15.
    fn release(&mut self, current: usize) {
        let near = |a: usize, b: usize, k: usize| a.abs_diff(b) <= k;
        for o in &mut self.objects {
            let cond: Vec<usize> = o.cond.keys().copied().collect();
            let keep =
                |t: usize, k: usize| near(t, current, k) || cond.iter().any(|&c| near(t, c, k));
            o.non_cond.retain(|&t, _| keep(t, MAX_OBJ_PTRS - 1));
            for (&t, out) in o.non_cond.iter_mut() {
                if !keep(t, NUM_MASKMEM - 1) {
                    out.stored.memory = Vec::new();
                    out.pred_masks = Vec::new();
                }
            }
        }
    }
}

enum Step<'a> {
    Points(&'a [PointPrompt], Option<Vec<f32>>),
    Mask(&'a [f32]),
    Track,
}

/// `fill_holes_in_mask_scores`: background components (logits <= 0, 8-connected) of at most
/// `max_area` pixels get the logit 0.1.
pub fn fill_holes(logits: &mut [f32], side: usize, max_area: usize) {
    if max_area == 0 {
        return;
    }
    let bg: Vec<u8> = logits.iter().map(|&v| (v <= 0.0) as u8).collect();
    let (labels, sizes) = components(&bg, side, side);
    for (v, &l) in logits.iter_mut().zip(&labels) {
        if l > 0 && sizes[l as usize] <= max_area {
            *v = 0.1;
        }
    }
}
