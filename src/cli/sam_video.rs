//! `segrs sam video`: track objects through a video with SAM 2 from a first-frame mask, clicks
//! or boxes, writing DAVIS-style indexed PNGs (what `segrs eval video` scores).

use anyhow::{Context, Result, bail};
use clap::Args;
use segrs::ops::Precision;
use segrs::sam::video::frames::Frames;
use segrs::sam::video::output::VosWriter;
use segrs::sam::video::predictor::{Retention, Sam2Video, VideoConfig, VideoPredictor};
use segrs::sam::video::prompts::{VideoPrompt, from_flags, from_indexed_mask, read_json};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VideoArgs {
    /// SAM 2 checkpoint: sam2{,.1}_hiera_{tiny,small,base_plus,large}.pt or safetensors with the
    /// same keys.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A folder of numbered JPEG / PNG frames (00000.jpg, ...), or a video file (needs `ffmpeg`).
    #[arg(long)]
    pub frames: PathBuf,
    /// Output folder: <frame>.png (indexed, object ids), result.json, and the optional extras.
    #[arg(long)]
    pub out: PathBuf,
    /// An indexed mask of the start frame, each non-zero value an object (a 0/255 mask is
    /// object 1).
    #[arg(long)]
    pub init_mask: Option<PathBuf>,
    /// A JSON list of {"frame", "obj_id", "points", "labels", "box", "mask"}.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// A click FRAME:OBJ:X,Y[:LABEL] (label 1 object, 0 background; repeat; a frame's and
    /// object's clicks go together).
    #[arg(long = "point")]
    pub points: Vec<String>,
    /// A box FRAME:OBJ:X1,Y1,X2,Y2 (with that frame's and object's clicks, if any).
    #[arg(long = "box")]
    pub boxes: Vec<String>,
    /// Start tracking at this frame (default: the earliest prompted one); the frame
    /// --init-mask is on.
    #[arg(long)]
    pub start_frame: Option<usize>,
    /// Track at most this many frames after the start.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Track backwards in time.
    #[arg(long)]
    pub reverse: bool,
    /// Fill holes of at most this many low-resolution pixels in the masks (0 = off).
    #[arg(long, default_value_t = 8)]
    pub fill_hole_area: usize,
    /// The model's input size (1024 for the released models; smaller is faster and coarser).
    #[arg(long, default_value_t = 1024)]
    pub image_size: usize,
    /// Also write a 0/255 PNG per object: <out>/<obj_id>/<frame>.png.
    #[arg(long)]
    pub per_object: bool,
    /// Also write the frames with the masks drawn over them: <out>/overlay/<frame>.png.
    #[arg(long)]
    pub overlay: bool,
    /// Keep every tracked frame's memory, as the reference does (memory grows with the video).
    #[arg(long)]
    pub keep_all_memories: bool,
    /// What the products compute in: f32, or bf16 (with f32 sums; needs AVX512_BF16, else f32
    /// runs and a note says why).
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn run(a: VideoArgs) -> Result<()> {
    let mut prompts: Vec<VideoPrompt> = Vec::new();
    if let Some(m) = &a.init_mask {
        prompts.extend(from_indexed_mask(m, a.start_frame.unwrap_or(0))?);
    }
    if let Some(j) = &a.prompts {
        prompts.extend(read_json(j)?);
    }
    prompts.extend(from_flags(&a.boxes, &a.points)?);
    if prompts.is_empty() {
        bail!("no prompt: give --init-mask, --prompts, --point or --box");
    }
    let frames = Frames::open(&a.frames)?;
    let n = frames.len();
    if let Some(p) = prompts.iter().find(|p| p.frame() >= n) {
        bail!(
            "a prompt for object {} is on frame {}, but {} has {n} frames (0 to {})",
            p.obj_id(),
            p.frame(),
            a.frames.display(),
            n - 1
        );
    }
    let t = std::time::Instant::now();
    let precision = super::on_this_cpu(a.precision);
    let model = Sam2Video::load_with(&a.checkpoint, a.image_size, precision)?;
    eprintln!(
        "loaded {} from {} in {:.1} s; {n} frames of {}x{}",
        model.sam.variant,
        a.checkpoint.display(),
        t.elapsed().as_secs_f64(),
        frames.width,
        frames.height
    );
    let cfg = VideoConfig {
        fill_hole_area: a.fill_hole_area,
        retention: if a.keep_all_memories {
            Retention::All
        } else {
            Retention::Window
        },
    };
    let mut p = VideoPredictor::new(&model, frames, cfg)?;
    for pr in &prompts {
        pr.apply(&mut p).with_context(|| {
            format!(
                "adding the prompt for object {} on frame {}",
                pr.obj_id(),
                pr.frame()
            )
        })?;
    }
    let mut writer = VosWriter::new(&a.out, a.per_object, a.overlay)?;
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "tracking {pos}/{len} frames [{elapsed_precise} < {eta}] {msg}",
        )
        .unwrap(),
    );
    let stems = p.frames.stems.clone();
    let (h, w) = (p.frames.height, p.frames.width);
    let mut overlay_frames = a.overlay.then(|| p.frames.reader());
    let t = std::time::Instant::now();
    let mut done = 0usize;
    p.propagate(a.start_frame, a.max_frames, a.reverse, &mut |r| {
        let frame = match overlay_frames.as_mut() {
            Some(f) => Some(f.read(r.frame)?),
            None => None,
        };
        writer.write(&r, &stems[r.frame], (h, w), frame.as_ref())?;
        done += 1;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    let result = serde_json::json!({
        "checkpoint": a.checkpoint,
        "variant": model.sam.variant,
        "frames": writer.records,
        "obj_ids": p.obj_ids(),
        "image_size": a.image_size,
        "fill_hole_area": a.fill_hole_area,
        "reverse": a.reverse,
    });
    segrs::io::write_json(&a.out.join("result.json"), &result)?;
    eprintln!(
        "tracked {} object(s) over {done} frames in {:.1} s ({:.2} s per frame) -> {}",
        p.obj_ids().len(),
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() / done.max(1) as f64,
        a.out.display()
    );
    Ok(())
}
