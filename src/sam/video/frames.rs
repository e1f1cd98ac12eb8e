//! Where a video's frames come from, read one at a time when the tracker asks for them: a
//! folder of numbered JPEG / PNG frames (the DAVIS layout, `00000.jpg`, `00001.jpg`, ...) or a
//! video file decoded by an `ffmpeg` executable through a pipe (spilled to temporary PNG files
//! when read backwards). Nothing is kept in memory after a frame has been handed over, so memory
//! does not grow with the video.
//!
//! [`model_input`] prepares a frame as `load_video_frames` does: Pillow's default (bicubic,
//! antialiased) resize of the 8-bit frame to the model's square input, then scaling to 0-1 and
//! the ImageNet normalisation.

use crate::data::image_io::read_image;
use crate::models::sam2::model::{PIXEL_MEAN, PIXEL_STD};
use crate::sam::resize::pil_resize_bicubic;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One decoded frame: interleaved 8-bit RGB.
pub struct Frame {
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// A video's frames, in order, readable by index.
pub struct Frames {
    /// Per frame, the name its outputs get (the file stem, or a 5-digit index for a video file).
    pub stems: Vec<String>,
    pub width: usize,
    pub height: usize,
    source: Source,
}

enum Source {
    Folder(Vec<PathBuf>),
    Video {
        path: PathBuf,
        reader: Option<Pipe>,
        /// Every frame decoded to PNG files, made the first time an earlier frame is asked
        /// for (tracking in reverse), so that going back costs a file read, not a decode from
        /// the start.
        spilled: Option<Spill>,
    },
}

/// A temporary folder of decoded frames, removed on drop.
struct Spill(PathBuf);

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ffmpeg` decoding raw RGB frames to its standard output.
struct Pipe {
    child: Child,
    /// The index of the frame the next read returns.
    next: usize,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

impl Frames {
    /// Opens a folder of frames or, when `path` is a file, a video through `ffmpeg`.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::folder(path)
        } else if path.is_file() {
            Self::video(path)
        } else {
            bail!("{}: no such folder of frames or video file", path.display())
        }
    }

    /// A folder of frames named by their number (any width of zero padding, consecutive).
    pub fn folder(dir: &Path) -> Result<Self> {
        let mut numbered = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?
        {
            let p = entry?.path();
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                continue;
            }
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let Ok(n) = stem.parse::<u64>() else {
                bail!(
                    "{}: frame files must be named by their number (00000.jpg, 00001.jpg, ...)",
                    p.display()
                );
            };
            numbered.push((n, stem, p));
        }
        if numbered.is_empty() {
            bail!("{}: no JPEG or PNG frames", dir.display());
        }
        numbered.sort();
        for w in numbered.windows(2) {
            if w[0].0 == w[1].0 {
                bail!(
                    "{} and {}: two frames with the number {}",
                    w[0].2.display(),
                    w[1].2.display(),
                    w[0].0
                );
            }
            if w[1].0 != w[0].0 + 1 {
                bail!(
                    "{}: frames {} to {} are missing after {}",
                    dir.display(),
                    w[0].0 + 1,
                    w[1].0 - 1,
                    w[0].2.display()
                );
            }
        }
        let first = read_image(&numbered[0].2)?;
        Ok(Self {
            stems: numbered.iter().map(|(_, s, _)| s.clone()).collect(),
            width: first.width,
            height: first.height,
            source: Source::Folder(numbered.into_iter().map(|(_, _, p)| p).collect()),
        })
    }

    /// A video file, decoded by `ffmpeg` (which must be on the PATH): one pass counts the frames
    /// and reads the size; frames are then decoded in order as they are asked for, and the
    /// first time an earlier frame is asked for (tracking in reverse) every frame is decoded
    /// once to PNG files in a temporary folder (disk, not memory), removed afterwards.
    pub fn video(path: &Path) -> Result<Self> {
        let probe = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"])
            .output();
        let probe = match probe {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: reading a video file needs an `ffmpeg` executable on the PATH (or give a folder of frames)",
                path.display()
            ),
            Err(e) => bail!("{}: cannot run ffmpeg: {e}", path.display()),
        };
        if !probe.status.success() {
            bail!(
                "{}: ffmpeg cannot decode it: {}",
                path.display(),
                String::from_utf8_lossy(&probe.stderr).trim()
            );
        }
        let progress = String::from_utf8_lossy(&probe.stdout);
        let count = progress
            .lines()
            .filter_map(|l| l.strip_prefix("frame="))
            .filter_map(|v| v.trim().parse::<usize>().ok())
            .next_back()
            .unwrap_or(0);
        if count == 0 {
            bail!("{}: no video frames", path.display());
        }
        let (width, height) = video_size(path)?;
        Ok(Self {
            stems: (0..count).map(|i| format!("{i:05}")).collect(),
            width,
            height,
            source: Source::Video {
                path: path.to_path_buf(),
                reader: None,
                spilled: None,
            },
        })
    }

    /// A second, independent reader of the same frames (a video file is not probed again).
    pub fn reader(&self) -> Frames {
        Frames {
            stems: self.stems.clone(),
            width: self.width,
            height: self.height,
            source: match &self.source {
                Source::Folder(paths) => Source::Folder(paths.clone()),
                Source::Video { path, .. } => Source::Video {
                    path: path.clone(),
                    reader: None,
                    spilled: None,
                },
            },
        }
    }

    pub fn len(&self) -> usize {
        self.stems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stems.is_empty()
    }

    /// Decodes frame `i`.
    pub fn read(&mut self, i: usize) -> Result<Frame> {
        if i >= self.len() {
            bail!(
                "frame {i} does not exist (the video has {} frames)",
                self.len()
            );
        }
        let (w, h) = (self.width, self.height);
        match &mut self.source {
            Source::Folder(paths) => {
                let p = &paths[i];
                let pic = read_image(p)?;
                if (pic.width, pic.height) != (w, h) {
                    bail!(
                        "{}: the frame is {}x{} but the first frame is {w}x{h}",
                        p.display(),
                        pic.width,
                        pic.height
                    );
                }
                Ok(Frame {
                    rgb: pic.with_channels(3).to_rgb8(),
                    width: w,
                    height: h,
                })
            }
            Source::Video {
                path,
                reader,
                spilled,
            } => {
                if spilled.is_none() && reader.as_ref().is_some_and(|r| r.next > i) {
                    *reader = None;
                    *spilled = Some(spill(path, self.stems.len())?);
                }
                if let Some(Spill(dir)) = spilled {
                    let p = dir.join(format!("{i:06}.png"));
                    let pic = read_image(&p)?;
                    return Ok(Frame {
                        rgb: pic.with_channels(3).to_rgb8(),
                        width: w,
                        height: h,
                    });
                }
                if reader.is_none() {
                    let child = Command::new("ffmpeg")
                        .args(["-v", "error", "-nostdin", "-i"])
                        .arg(&*path)
                        .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .with_context(|| format!("{}: cannot run ffmpeg", path.display()))?;
                    *reader = Some(Pipe { child, next: 0 });
                }
                let r = reader.as_mut().expect("started above");
                let mut rgb = vec![0u8; w * h * 3];
                let out = r.child.stdout.as_mut().expect("piped");
                while r.next <= i {
                    out.read_exact(&mut rgb).with_context(|| {
                        format!("{}: ffmpeg stopped before frame {}", path.display(), r.next)
                    })?;
                    r.next += 1;
                }
                Ok(Frame {
                    rgb,
                    width: w,
                    height: h,
                })
            }
        }
    }
}

/// Decodes every frame of a video to PNG files in a new temporary folder.
fn spill(path: &Path, frames: usize) -> Result<Spill> {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("segrs-frames-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let spill = Spill(dir);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-start_number", "0"])
        .arg(spill.0.join("%06d.png"))
        .status()
        .with_context(|| format!("{}: cannot run ffmpeg", path.display()))?;
    let written = std::fs::read_dir(&spill.0).map(|d| d.count()).unwrap_or(0);
    if !status.success() || written < frames {
        bail!(
            "{}: ffmpeg decoded {written} of {frames} frames to {}",
            path.display(),
            spill.0.display()
        );
    }
    Ok(spill)
}

/// The size of a video's first stream, from a one-frame PPM through `ffmpeg`.
fn video_size(path: &Path) -> Result<(usize, usize)> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "ppm",
            "-",
        ])
        .output()
        .with_context(|| format!("{}: cannot run ffmpeg", path.display()))?;
    // "P6\n<w> <h>\n255\n"
    let head = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(64)]).to_string();
    let mut it = head.split_ascii_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some("P6"), Some(w), Some(h)) => match (w.parse(), h.parse()) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
            _ => bail!("{}: cannot read the frame size", path.display()),
        },
        _ => bail!("{}: ffmpeg gave no first frame", path.display()),
    }
}

/// A frame as the model takes it: `[3, S, S]`, Pillow-bicubic resized, normalised.
pub fn model_input(frame: &Frame, size: usize) -> Vec<f32> {
    let resized = pil_resize_bicubic(&frame.rgb, frame.width, frame.height, 3, size, size);
    let n = size * size;
    let mut out = vec![0.0f32; 3 * n];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // numpy divides in double precision, then the tensor is float32.
            let v = (px[c] as f64 / 255.0) as f32;
            out[c * n + i] = (v - PIXEL_MEAN[c]) / PIXEL_STD[c];
        }
    }
    out
}
