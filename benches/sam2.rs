//! `cargo bench --bench sam2`: SAM 2 in segrs and in PyTorch (the official `sam2` package) on
//! this machine, same thread count, one run, the same random weights (PyTorch saves them as the
//! official .pt files are saved, segrs loads them):
//!
//! * the image path (Hiera trunk, FPN neck, conv_s0 / conv_s1) on the truck photo's
//!   1x3x1024x1024 input, Hiera-T and Hiera-B+, and `set_image` end to end;
//! * prompt encoder + mask decoder per single-point prompt (multimask), over 16 prompts;
//! * full-size parity of the image embedding and the low-res logits.
//!
//! The PyTorch side is tools/bench_sam2_torch.py, run with $SEGRS_TORCH_PYTHON (default
//! /tmp/segrs-refenv/bin/python from ../shared/tools/reference-env.sh). Results go to stdout
//! and to the SAM 2 section of BENCHMARKS.md. Environment: SEGRS_BENCH_THREADS (default all
//! cores), SEGRS_BENCH_REPEATS (default 3), SEGRS_BENCH_KEEP=DIR (keep and reuse PyTorch's
//! side, for iterating; BENCHMARKS.md is then left alone).

mod common;
use common::{
    cpu_name, reference_json, rel_l2, repeats, thread_pool, timed, torch_python, write_section,
};

use segrs::models::sam::model::ImageEmbedding;
use segrs::models::sam2::model::Sam2;
use segrs::sam::predictor::Prompt;

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    let python = torch_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_sam2_torch.py");
    let keep = std::env::var("SEGRS_BENCH_KEEP")
        .ok()
        .map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("segrs-sam2-bench-{}", std::process::id()))
    });
    let photo = std::env::var("SEGRS_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"))
        })
        .join("sam_demo_images/truck.jpg");
    if !photo.exists() {
        eprintln!("SKIP: no sam_demo_images/truck.jpg under ../shared/data");
        return;
    }
    let args = [threads, repeats]
        .map(|v| v.to_string())
        .into_iter()
        .chain([dir.display().to_string(), photo.display().to_string()]);
    let Some(torch) = reference_json(&python, script, &args.collect::<Vec<_>>(), keep.as_deref())
    else {
        return;
    };
    let io = segrs::weights::safetensors::read(&dir.join("io.safetensors")).unwrap();
    let x = &io.get("input").unwrap().data;
    let pts = &io.get("points").unwrap().data;
    let pic = segrs::data::image_io::read_image(&photo).unwrap();
    let (rgb, h, w) = (pic.to_rgb8(), pic.height, pic.width);
    let mut md = format!(
        "SAM 2.1, {}, {threads} thread(s), median of {repeats} runs (image path) and of 3 x 16 prompts (decoder), one run of `cargo bench --bench sam2`; PyTorch {} eager under `inference_mode`, `torch.set_num_threads({threads})`, the official `sam2` package. Same random weights on both sides (saved by PyTorch as `{{\"model\": state_dict}}` .pt).\n\n",
        cpu_name(),
        torch["torch"].as_str().unwrap_or("?")
    );
    md.push_str("| what | segrs | PyTorch | segrs / PyTorch | parity (relative L2) |\n|---|---|---|---|---|\n");
    for name in ["hiera_t", "hiera_b+"] {
        if std::env::var("SEGRS_BENCH_MODEL").is_ok_and(|m| m != name) {
            continue;
        }
        let m = Sam2::load(&dir.join(format!("{name}.pt"))).unwrap();
        let mut e = None;
        let enc = timed(repeats, || e = Some(m.encode(x, (h, w)).unwrap()));
        let e = e.unwrap();
        let want = |k: &str| io.get(&format!("{name}.{k}")).unwrap().data.clone();
        let t_enc = torch[format!("{name}_encoder_s")].as_f64().unwrap();
        md.push_str(&format!(
            "| {} image path (trunk, neck, high-res convs), 1x3x1024x1024 | {:.2} s | {:.2} s | {:.2}x | embedding {:.1e} |\n",
            m.variant, enc, t_enc, enc / t_enc, rel_l2(&e.features, &want("image_embed"))
        ));
        let set = timed(repeats.div_ceil(2), || {
            m.set_image(&rgb, h, w).unwrap();
        });
        let t_set = torch[format!("{name}_set_image_s")].as_f64().unwrap();
        md.push_str(&format!(
            "| {} `set_image` on truck.jpg ({w}x{h}: resize with antialias, normalise, image path) | {:.2} s | {:.2} s | {:.2}x | |\n",
            m.variant, set, t_set, set / t_set
        ));
        // The decoder on PyTorch's features, so that only the decoder is compared.
        let mut te = ImageEmbedding::new(want("image_embed"), 256, 64, (h, w), (1024, 1024));
        te.high_res = Some(std::sync::Arc::new((
            want("high_res_0"),
            want("high_res_1"),
        )));
        let decode = |i: usize| {
            let p = Prompt {
                points: vec![(pts[2 * i] as f64, pts[2 * i + 1] as f64, 1)],
                ..Default::default()
            };
            m.predict_low_res(&te, &p, true).unwrap().0
        };
        let mut low = Vec::new();
        let mut iou = Vec::new();
        for i in 0..16 {
            let r = decode(i);
            low.extend(r.masks.concat());
            iou.extend(r.scores);
        }
        let dec = timed(3, || {
            for i in 0..16 {
                decode(i);
            }
        }) / 16.0;
        let t_dec = torch[format!("{name}_decoder_s")].as_f64().unwrap();
        let iou_err = iou
            .iter()
            .zip(&want("iou"))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        md.push_str(&format!(
            "| {} prompt encoder + mask decoder, per point prompt | {:.1} ms | {:.1} ms | {:.2}x | logits {:.1e}, IoU max abs {:.1e} |\n",
            m.variant,
            dec * 1e3,
            t_dec * 1e3,
            dec / t_dec,
            rel_l2(&low, &want("low_res")),
            iou_err
        ));
    }
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    print!("{md}");
    if keep.is_some() {
        return;
    }
    write_section("sam2", &md);
}
