//! `cargo bench --bench bf16`: segrs' bf16 inference (`--precision bf16`) against its own f32
//! on real images:
//!
//! * SAM ViT-B and MobileSAM (vit_t), random weights under the official keys, on the shared
//!   photos (`sam_demo_images`): the image embedding's relative L2 error, and the share of
//!   full-size mask pixels that agree for a point prompt (3 masks) and a box with a negative
//!   point (1 mask);
//! * the classic U-Net (1 -> 2 classes, seeded random weights as PyTorch initialises them) on the ISBI 2012
//!   membrane images: the logits' relative L2 error and the share of pixels whose class agrees.
//!
//! Times of both precisions where the CPU has AVX512_BF16. Elsewhere bf16 runs on the portable
//! kernel, whose sums are the instruction's (up to their order), so the accuracy columns hold
//! and its time says nothing about bf16's speed. Results go to stdout and to the bf16 section
//! of BENCHMARKS.md. Environment: SEGRS_BENCH_THREADS, SEGRS_DATA, SEGRS_BENCH_IMAGES (ISBI
//! images, default 4).

mod common;
use common::{cpu_name, random_sam, rel_l2, thread_pool, write_section};

use segrs::models::sam::model::Sam;
use segrs::models::unet::UNetConfig;
use segrs::models::unet::host::HostUNet;
use segrs::ops::Precision;
use segrs::sam::predictor::{Prediction, Prompt};
use std::path::PathBuf;
use std::time::Instant;

fn data() -> PathBuf {
    std::env::var("SEGRS_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")))
}

fn seconds<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn masks(p: &Prediction) -> Vec<u8> {
    (0..p.logits.len()).flat_map(|i| p.mask(i)).collect()
}

fn agreement(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// One table row: what, times, errors.
struct Row {
    what: String,
    f32_s: f64,
    bf16_s: f64,
    rel_l2: f64,
    agree: String,
}

fn sam_rows(variant: &str, photos: &[PathBuf], rows: &mut Vec<Row>) {
    let path = std::env::temp_dir().join(format!(
        "segrs-bf16-{variant}-{}.safetensors",
        std::process::id()
    ));
    random_sam(variant, &path);
    let (a, b) = (
        Sam::load(&path).unwrap(),
        Sam::load_with(&path, Precision::Bf16).unwrap(),
    );
    std::fs::remove_file(&path).ok();
    let (mut t32, mut t16, mut errs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut point, mut boxed) = (Vec::new(), Vec::new());
    for p in photos {
        let pic = segrs::data::image_io::read_image(p).unwrap();
        let (rgb, h, w) = (pic.to_rgb8(), pic.height, pic.width);
        let (ea, s) = seconds(|| a.set_image(&rgb, h, w).unwrap());
        t32.push(s);
        let (eb, s) = seconds(|| b.set_image(&rgb, h, w).unwrap());
        t16.push(s);
        errs.push(rel_l2(&eb.features, &ea.features));
        let (hf, wf) = (h as f64, w as f64);
        let pt = Prompt {
            points: vec![(0.45 * wf, 0.4 * hf, 1)],
            ..Default::default()
        };
        let bx = Prompt {
            points: vec![(0.6 * wf, 0.5 * hf, 0)],
            bbox: Some([0.1 * wf, 0.2 * hf, 0.9 * wf, 0.8 * hf]),
            ..Default::default()
        };
        let run = |m: &Sam, e, p: &Prompt, multi| masks(&m.predict(e, p, multi).unwrap());
        point.push(agreement(
            &run(&a, &ea, &pt, true),
            &run(&b, &eb, &pt, true),
        ));
        boxed.push(agreement(
            &run(&a, &ea, &bx, false),
            &run(&b, &eb, &bx, false),
        ));
        eprintln!(
            "{variant} {}: embedding rel. L2 {:.1e}, masks agree {:.4}% / {:.4}%",
            p.display(),
            errs.last().unwrap(),
            100.0 * point.last().unwrap(),
            100.0 * boxed.last().unwrap()
        );
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    rows.push(Row {
        what: format!("SAM {variant} `set_image` ({} photos)", photos.len()),
        f32_s: median(t32),
        bf16_s: median(t16),
        rel_l2: errs.iter().copied().fold(0.0, f64::max),
        agree: format!(
            "masks: point {:.3}%, box + negative point {:.3}% (lowest photo)",
            100.0 * min(&point),
            100.0 * min(&boxed)
        ),
    });
}

fn unet_row(images: &[PathBuf], rows: &mut Vec<Row>) {
    let config = UNetConfig::classic(1, 2);
    let named = segrs::models::unet::state_dict::seeded_init(&config, 0);
    let a = HostUNet::from_tensors(&config, &named).unwrap();
    let b = HostUNet::from_tensors_with(&config, &named, Precision::Bf16).unwrap();
    let (mut t32, mut t16, mut errs, mut agree) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // the share of pixels f32 puts in class 1 (agreement means little if it is 0 or 1)
    let mut ones = Vec::new();
    // agreement at a decision threshold that splits f32's pixels in half
    let mut balanced = Vec::new();
    for p in images {
        let pic = segrs::data::image_io::read_image(p).unwrap();
        let (h, w) = (pic.height, pic.width);
        let x: Vec<f32> = pic.with_channels(1).data.iter().map(|&v| v - 0.5).collect();
        let (ya, s) = seconds(|| a.forward(&x, h, w).unwrap());
        t32.push(s);
        let (yb, s) = seconds(|| b.forward(&x, h, w).unwrap());
        t16.push(s);
        errs.push(rel_l2(&yb, &ya));
        let class = |y: &[f32], i: usize| (y[h * w + i] > y[i]) as u8;
        let same = (0..h * w)
            .filter(|&i| class(&ya, i) == class(&yb, i))
            .count();
        agree.push(same as f64 / (h * w) as f64);
        let class_1 = (0..h * w).filter(|&i| class(&ya, i) == 1).count();
        ones.push(class_1 as f64 / (h * w) as f64);
        // the decision moved to f32's median logit margin: half the pixels in each class
        let margin = |y: &[f32], i: usize| y[h * w + i] - y[i];
        let mut m: Vec<f32> = (0..h * w).map(|i| margin(&ya, i)).collect();
        m.sort_by(f32::total_cmp);
        let t = m[m.len() / 2];
        let same = (0..h * w)
            .filter(|&i| (margin(&ya, i) > t) == (margin(&yb, i) > t))
            .count();
        balanced.push(same as f64 / (h * w) as f64);
    }
    rows.push(Row {
        what: format!(
            "classic U-Net forward, ISBI 2012 ({} images, 512x512)",
            images.len()
        ),
        f32_s: median(t32),
        bf16_s: median(t16),
        rel_l2: errs.iter().copied().fold(0.0, f64::max),
        agree: format!(
            "argmax: {:.3}% of pixels (lowest image; f32 puts {:.0}-{:.0}% of them in class 1); with the decision at f32's median margin (half the pixels in each class): {:.3}%",
            100.0 * agree.iter().copied().fold(1.0, f64::min),
            100.0 * ones.iter().copied().fold(1.0, f64::min),
            100.0 * ones.iter().copied().fold(0.0, f64::max),
            100.0 * balanced.iter().copied().fold(1.0, f64::min)
        ),
    });
}

fn main() {
    let threads = thread_pool();
    let native = segrs::ops::bf16::has_native();
    let root = data();
    let photos: Vec<PathBuf> = ["truck", "dog", "groceries", "cars"]
        .iter()
        .map(|n| root.join(format!("sam_demo_images/{n}.jpg")))
        .filter(|p| p.exists())
        .collect();
    let n_isbi: usize = std::env::var("SEGRS_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let isbi: Vec<PathBuf> = (0..n_isbi)
        .map(|i| root.join(format!("isbi2012_membrane/train/image/{i}.png")))
        .filter(|p| p.exists())
        .collect();
    if photos.is_empty() || isbi.is_empty() {
        eprintln!(
            "SKIP: the shared photos or ISBI images are absent under {} (set SEGRS_DATA)",
            root.display()
        );
        return;
    }
    let mut rows = Vec::new();
    // SEGRS_BENCH_MODEL=vit_b|vit_t|unet runs one model (and leaves BENCHMARKS.md alone)
    let only = std::env::var("SEGRS_BENCH_MODEL").ok();
    let run = |m: &str| only.as_deref().is_none_or(|o| o == m);
    for variant in ["vit_b", "vit_t"] {
        if run(variant) {
            sam_rows(variant, &photos, &mut rows);
        }
    }
    if run("unet") {
        unet_row(&isbi, &mut rows);
    }
    let kernel = if native {
        "AVX512_BF16 (`vdpbf16ps`)"
    } else {
        "the portable kernel: this CPU has no AVX512_BF16, so the bf16 times measure accuracy runs, not bf16's speed (the CLI runs f32 here)"
    };
    let mut md = format!(
        "bf16 against f32 in segrs, {}, {threads} thread(s), one run of `cargo bench --bench bf16`; bf16 products on {kernel}. Random weights (SAM under the official keys, seeded; the U-Net as initialised, seeded), real images; relative L2 of the embedding (SAM) or the logits (U-Net), the largest over the images.\n\n",
        cpu_name()
    );
    md.push_str("| what | f32 | bf16 | bf16 / f32 | relative L2 | agreement with f32 |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.2} s | {:.2} s | {:.2}x | {:.1e} | {} |\n",
            r.what,
            r.f32_s,
            r.bf16_s,
            r.bf16_s / r.f32_s,
            r.rel_l2,
            r.agree
        ));
    }
    print!("{md}");
    if only.is_none() {
        write_section("bf16", &md);
    }
}
