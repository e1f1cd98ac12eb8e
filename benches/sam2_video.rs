//! `cargo bench --bench sam2_video`: SAM 2 video tracking in segrs and in PyTorch (the official
//! `SAM2VideoPredictor`) on this machine, same thread count, one run, the same random SAM 2.1
//! Hiera-T weights (saved by PyTorch as the official .pt files are), on the first frames of
//! ../shared/data/sam2_bedroom_video:
//!
//! * per-frame tracking time at 1024 for one object and for three objects (the prompted first
//!   frame left out), and the largest object-score difference between the two;
//! * peak resident memory of a whole run over 50 and over 200 frames at input size 256, the
//!   reference against the `segrs sam video` binary (each a child process of the PyTorch script,
//!   its peak VmHWM polled from /proc).
//!
//! The PyTorch side is tools/bench_sam2_video_torch.py, run with $SEGRS_TORCH_PYTHON (default
//! /tmp/segrs-refenv/bin/python). Environment: SEGRS_BENCH_THREADS (default all cores),
//! SEGRS_BENCH_FRAMES (default 8), SEGRS_BENCH_KEEP=DIR (keep and reuse PyTorch's side;
//! BENCHMARKS.md is then left alone). Results go to stdout and the SAM 2 video section of
//! BENCHMARKS.md.

mod common;
use common::{cpu_name, reference_json, thread_pool, torch_python, write_section};

use segrs::sam::video::frames::Frames;
use segrs::sam::video::predictor::{
    PointsOrBox, Retention, Sam2Video, VideoConfig, VideoPredictor,
};

fn main() {
    let threads = thread_pool();
    let n: usize = std::env::var("SEGRS_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let python = torch_python();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/bench_sam2_video_torch.py"
    );
    let keep = std::env::var("SEGRS_BENCH_KEEP")
        .ok()
        .map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("segrs-sam2-video-bench-{}", std::process::id()))
    });
    let src = std::env::var("SEGRS_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"))
        })
        .join("sam2_bedroom_video/frames");
    if !src.is_dir() {
        eprintln!("SKIP: no sam2_bedroom_video/frames under ../shared/data");
        return;
    }
    let args = [
        threads.to_string(),
        dir.display().to_string(),
        src.display().to_string(),
        n.to_string(),
        env!("CARGO_BIN_EXE_segrs").to_string(),
    ];
    let Some(torch) = reference_json(&python, script, &args, keep.as_deref()) else {
        return;
    };
    let model = Sam2Video::load(&dir.join("hiera_t.pt"), 1024).unwrap();
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names.iter().take(n) {
        let l = frames_dir.join(p.file_name().unwrap());
        if !l.exists() {
            std::os::unix::fs::symlink(p, l).unwrap();
        }
    }
    let prompts = [
        (1, vec![(210.0, 350.0, 1)], None),
        (2, vec![(400.0, 150.0, 1), (460.0, 300.0, 0)], None),
        (3, vec![], Some([300.0, 0.0, 500.0, 400.0])),
    ];
    let mut md = format!(
        "{} threads on {}, PyTorch {}, SAM 2.1 Hiera-T (random weights) at 1024, the first {n} frames of the bedroom video (960x540); seconds per tracked frame, the prompted frame left out.\n\n| objects | segrs s/frame | PyTorch s/frame | ratio | max object-score difference |\n|---|---|---|---|---|\n",
        threads,
        cpu_name(),
        torch["torch"].as_str().unwrap_or("?")
    );
    let mut per_frame = Vec::new();
    for objects in [1usize, 3] {
        let cfg = VideoConfig {
            fill_hole_area: 8,
            retention: Retention::Window,
        };
        let mut p = VideoPredictor::new(&model, Frames::folder(&frames_dir).unwrap(), cfg).unwrap();
        for (id, pts, bbox) in prompts.iter().take(objects) {
            p.add_points(
                0,
                *id,
                &PointsOrBox {
                    points: pts.clone(),
                    bbox: *bbox,
                    clear_old_points: true,
                },
            )
            .unwrap();
        }
        let mut times = Vec::new();
        let mut scores = Vec::new();
        let mut t = std::time::Instant::now();
        p.propagate(None, None, false, &mut |r| {
            if r.frame > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
            scores.push(r.objects.iter().map(|o| o.object_score).collect::<Vec<_>>());
            t = std::time::Instant::now();
            Ok(())
        })
        .unwrap();
        let ours = times.iter().sum::<f64>() / times.len() as f64;
        let theirs = torch[format!("objects_{objects}_frame_s")]
            .as_f64()
            .unwrap();
        let want = &torch[format!("objects_{objects}_scores")];
        let mut diff = 0f64;
        for (f, row) in scores.iter().enumerate() {
            for (k, s) in row.iter().enumerate() {
                diff = diff.max((*s as f64 - want[f][k].as_f64().unwrap()).abs());
            }
        }
        per_frame.push(ours);
        println!(
            "{objects} object(s): segrs {ours:.2} s/frame, PyTorch {theirs:.2} s/frame ({:.2}x), object scores within {diff:.1e}",
            ours / theirs
        );
        md.push_str(&format!(
            "| {objects} | {ours:.2} | {theirs:.2} | {:.2}x | {diff:.1e} |\n",
            ours / theirs
        ));
    }
    md.push_str(&format!(
        "\nThree objects cost {:.2}x one object in segrs ({:.2}x in PyTorch).\n\nPeak resident memory of a whole run (one click, input size 256, `segrs sam video` against `init_state` + `propagate_in_video`):\n\n| frames | segrs MiB | PyTorch MiB |\n|---|---|---|\n",
        per_frame[1] / per_frame[0],
        torch["objects_3_frame_s"].as_f64().unwrap() / torch["objects_1_frame_s"].as_f64().unwrap()
    ));
    for nf in [50, 200] {
        let (a, b) = (
            torch[format!("rss_segrs_{nf}_mb")].as_f64().unwrap(),
            torch[format!("rss_torch_{nf}_mb")].as_f64().unwrap(),
        );
        println!("{nf} frames: peak RSS segrs {a:.0} MiB, PyTorch {b:.0} MiB");
        md.push_str(&format!("| {nf} | {a:.0} | {b:.0} |\n"));
    }
    if keep.is_none() {
        write_section("sam2_video", &md);
        std::fs::remove_dir_all(&dir).ok();
    }
}
