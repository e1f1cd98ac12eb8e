//! `cargo bench --bench tiled`: overlap-tile prediction of an image far larger than memory
//! would hold whole, through `segrs predict --tile 512 --overlap 64` as a user runs it. A
//! synthetic 20000 x 20000 8-bit gray BigTIFF (400 MB of pixels; 1.6 GB as floats, 3.2 GB of
//! two-class logits) is written strip by strip, then predicted by the ISBI recipe's U-Net
//! (1 -> 2 classes, base width 16, depth 4; random weights, or SEGRS_TILED_CHECKPOINT). Reports
//! the wall time, tiles per second and the peak resident memory of the `segrs` process
//! (`ru_maxrss` from wait4), and checks the label PNG's size.
//! Environment: SEGRS_TILED_SIDE (default 20000), SEGRS_BENCH_THREADS (default: all cores).

mod common;
use common::{cpu_name, threads, write_section};

use segrs::models::unet::checkpoint::{self, CheckpointMeta};
use segrs::models::unet::{UNet, UNetConfig, Upsampling};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A gray image of bright cells separated by dark membranes (a distorted grid), written as a
/// BigTIFF in strips of 64 rows, never held whole.
fn write_tiff(path: &Path, side: usize) {
    use tiff::encoder::{TiffEncoder, colortype::Gray8};
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create TIFF"));
    let mut enc = TiffEncoder::new_big(file).expect("BigTIFF encoder");
    let mut img = enc
        .new_image::<Gray8>(side as u32, side as u32)
        .expect("TIFF image");
    let rows = 64usize;
    img.rows_per_strip(rows as u32).expect("rows per strip");
    let mut strip = Vec::with_capacity(rows * side);
    for y0 in (0..side).step_by(rows) {
        strip.clear();
        for y in y0..(y0 + rows).min(side) {
            for x in 0..side {
                let (fy, fx) = (y as f32, x as f32);
                let u = (fx / 37.0 + (fy / 91.0).sin()).sin();
                let v = (fy / 41.0 + (fx / 83.0).cos()).sin();
                let membrane = (u * v).abs() < 0.08;
                let noise = ((x * 7919 + y * 104729) % 23) as u8;
                strip.push(if membrane { 40 + noise } else { 170 + noise });
            }
        }
        img.write_strip(&strip).expect("TIFF strip");
    }
    img.finish().expect("finish TIFF");
}

fn model(dir: &Path) -> PathBuf {
    if let Ok(p) = std::env::var("SEGRS_TILED_CHECKPOINT") {
        return PathBuf::from(p);
    }
    let config = UNetConfig {
        in_channels: 1,
        num_classes: 2,
        base_width: 16,
        depth: 4,
        upsampling: Upsampling::Transpose,
        batch_norm: true,
    };
    let mut cfg = segrs::train::demo_config(1, 0);
    cfg.unet = config.clone();
    cfg.normalize = segrs::data::preprocess::Normalize::new(vec![0.5], vec![0.2]).unwrap();
    cfg.class_names = vec!["membrane".into(), "cell".into()];
    let meta: CheckpointMeta = segrs::train::trainer::meta_of(&cfg, 0);
    let path = dir.join("unet.safetensors");
    let unet = UNet::new(&config, &burn::prelude::Device::flex());
    checkpoint::save(&path, &unet, &meta).expect("save checkpoint");
    path
}

/// Runs `cmd`, returning (seconds, peak RSS in MiB, exit status).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives the peak RSS
fn run_measured(cmd: &mut std::process::Command) -> (f64, f64, i32) {
    let start = Instant::now();
    let child = cmd.spawn().expect("start segrs");
    let mut status = 0i32;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `usage` is a valid rusage to fill.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(r > 0, "wait4 failed");
    let secs = start.elapsed().as_secs_f64();
    (
        secs,
        usage.ru_maxrss as f64 / 1024.0,
        libc::WEXITSTATUS(status),
    )
}

fn main() {
    let side: usize = std::env::var("SEGRS_TILED_SIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let threads = threads();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/bench-tiled");
    std::fs::create_dir_all(&dir).unwrap();
    let tif = dir.join("big.tif");
    let t = Instant::now();
    write_tiff(&tif, side);
    eprintln!(
        "wrote {} ({side}x{side}, {:.0} MB) in {:.1} s",
        tif.display(),
        std::fs::metadata(&tif).unwrap().len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let ckpt = model(&dir);
    let out = dir.join("pred");
    let (tile, overlap) = (512usize, 64usize);
    let (secs, rss_mib, code) = run_measured(
        std::process::Command::new(env!("CARGO_BIN_EXE_segrs"))
            .args(["--threads", &threads.to_string(), "predict", "--checkpoint"])
            .arg(&ckpt)
            .arg("--images")
            .arg(&tif)
            .arg("--out")
            .arg(&out)
            .args([
                "--tile",
                &tile.to_string(),
                "--overlap",
                &overlap.to_string(),
            ]),
    );
    assert_eq!(code, 0, "segrs predict failed");
    let png = out.join("big.png");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap();
    let (w, h) = (info.info().width as usize, info.info().height as usize);
    assert_eq!((w, h), (side, side), "label map size");
    let step = tile - overlap;
    let per_side = if side <= tile {
        1
    } else {
        (side - tile).div_ceil(step) + 1
    };
    let tiles = per_side * per_side;
    let md = format!(
        "CPU: {} · {threads} threads · `segrs predict --tile {tile} --overlap {overlap}` on a {side}x{side} 8-bit gray BigTIFF (strips of 64 rows), U-Net 1 -> 2 classes, base width 16, depth 4\n\n\
| image | tiles | wall time | tiles/s | peak RSS | whole image as floats + logits |\n|---|---|---|---|---|---|\n\
| {side}x{side} | {tiles} | {:.0} s | {:.2} | **{:.0} MiB** | {:.0} MiB |\n",
        cpu_name(),
        secs,
        tiles as f64 / secs,
        rss_mib,
        (side * side * 4 * 3) as f64 / (1 << 20) as f64,
    );
    print!("{md}");
    write_section("tiled", &md);
    std::fs::remove_file(&tif).ok();
}
