//! `cargo bench --bench sam`: Segment Anything in segrs and in PyTorch on this machine, same
//! thread count, one run, the same random weights (PyTorch saves them as .pth, segrs loads them):
//!
//! * image encoder, 1x3x1024x1024: SAM ViT-B and MobileSAM's TinyViT (vit_t);
//! * prompt encoder + mask decoder per single-point prompt (multimask), averaged over 16 prompts;
//! * full-size parity of the embeddings and low-res logits.
//!
//! The PyTorch side is tools/bench_sam_torch.py, run with $SEGRS_TORCH_PYTHON (default
//! /tmp/segrs-refenv/bin/python from ../shared/tools/reference-env.sh); without it nothing is
//! timed (the weights come from PyTorch). Results go to stdout and to the SAM section of
//! BENCHMARKS.md. Environment: SEGRS_BENCH_THREADS (default all cores), SEGRS_BENCH_REPEATS
//! (default 3).

mod common;
use common::{
    cpu_name, reference_json, rel_l2, repeats, runtime_table, runtimes, thread_pool, timed,
    torch_python, write_section,
};

use segrs::models::sam::model::Sam;
use segrs::models::sam::prompt_encoder::PointPrompt;
use std::time::Instant;

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    let python = torch_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_sam_torch.py");
    // SEGRS_BENCH_KEEP=DIR keeps PyTorch's weights, outputs and timings in DIR and reuses them
    // on the next run (for iterating on the segrs side).
    let keep = std::env::var("SEGRS_BENCH_KEEP")
        .ok()
        .map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("segrs-sam-bench-{}", std::process::id()))
    });
    // A real photo for the end-to-end predictor check (skipped when the shared data is absent).
    let photo = std::env::var("SEGRS_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"))
        })
        .join("sam_demo_images/truck.jpg");
    let photo = photo.exists().then_some(photo);
    if photo.is_none() {
        eprintln!(
            "SKIP: no sam_demo_images/truck.jpg under ../shared/data; the end-to-end photo check is left out"
        );
    }
    let mut args = vec![
        threads.to_string(),
        repeats.to_string(),
        dir.display().to_string(),
    ];
    if let Some(p) = &photo {
        args.push(p.display().to_string());
    }
    let Some(torch) = reference_json(&python, script, &args, keep.as_deref()) else {
        return;
    };
    let io = segrs::weights::safetensors::read(&dir.join("io.safetensors")).unwrap();
    let x = &io.get("input").unwrap().data;
    let cpu = cpu_name();
    let mut md = format!(
        "SAM, {cpu}, {threads} thread(s), median of {repeats} runs (encoder) and of 10 rounds of 16 prompts (decoder), one run of `cargo bench --bench sam`; PyTorch {} eager under `inference_mode`, `torch.set_num_threads({threads})`. Same random weights on both sides (saved by PyTorch as .pth).\n\n",
        torch["torch"].as_str().unwrap_or("?")
    );
    md.push_str("| what | segrs | PyTorch | segrs / PyTorch | parity (relative L2) |\n|---|---|---|---|---|\n");
    let only = std::env::var("SEGRS_BENCH_ONLY_DECODER").is_ok();
    // segrs' times for the rows of the deployment runtimes' table.
    let mut deployed: Vec<(&str, &str, f64)> = Vec::new();
    for name in ["vit_b", "vit_t"] {
        if only && name == "vit_t" {
            break;
        }
        if std::env::var("SEGRS_BENCH_MODEL").is_ok_and(|m| m != name) {
            continue;
        }
        let sam = Sam::load(&dir.join(format!("{name}.pth"))).unwrap();
        assert_eq!(sam.variant, name);
        let mut emb = Vec::new();
        let enc = if only {
            emb = io.get(&format!("{name}.embedding")).unwrap().data.clone();
            f64::NAN
        } else {
            timed(repeats, || emb = sam.image_encoder.forward(x).unwrap())
        };
        let want = &io.get(&format!("{name}.embedding")).unwrap().data;
        let t_enc = torch[format!("{name}_encoder_s")].as_f64().unwrap();
        deployed.push(if name == "vit_b" {
            ("vit_b_encoder", "vit_b image encoder, 1x3x1024x1024", enc)
        } else {
            ("vit_t_encoder", "vit_t image encoder, 1x3x1024x1024", enc)
        });
        // bf16, where the CPU has AVX512_BF16 (elsewhere `cargo bench --bench bf16` measures
        // its accuracy on the portable kernel)
        let bf16 = (segrs::ops::bf16::has_native() && !only).then(|| {
            Sam::load_with(
                &dir.join(format!("{name}.pth")),
                segrs::ops::Precision::Bf16,
            )
            .unwrap()
        });
        if let Some(m) = &bf16 {
            let t = timed(repeats, || {
                std::hint::black_box(m.image_encoder.forward(x).unwrap());
            });
            deployed.push(if name == "vit_b" {
                (
                    "vit_b_encoder",
                    "vit_b image encoder, 1x3x1024x1024, bf16",
                    t,
                )
            } else {
                (
                    "vit_t_encoder",
                    "vit_t image encoder, 1x3x1024x1024, bf16",
                    t,
                )
            });
        }
        md.push_str(&format!(
            "| {name} image encoder, 1x3x1024x1024 | {:.2} s | {:.2} s | {:.2}x | {:.1e} |\n",
            enc,
            t_enc,
            enc / t_enc,
            rel_l2(&emb, want)
        ));
        // decoder with PyTorch's embedding, so that only the decoder is compared
        let e = segrs::sam::predictor::ImageEmbedding::new(
            want.clone(),
            256,
            64,
            (1024, 1024),
            (1024, 1024),
        );
        let pts = &io.get(&format!("{name}.points")).unwrap().data;
        // the predictor's decode path: prompt encoder + mask decoder, multimask (masks 1-3)
        let decode = |i: usize| {
            let p = [PointPrompt {
                x: pts[2 * i] as f64,
                y: pts[2 * i + 1] as f64,
                label: 1,
            }];
            sam.decode_points(&e, &p).unwrap()
        };
        let mut low = Vec::new();
        let mut iou = Vec::new();
        for i in 0..16 {
            let (m, q) = decode(i);
            low.extend(m.concat());
            iou.extend(q);
        }
        let reps = if only { 20 } else { 10 };
        let dec = timed(reps, || {
            for i in 0..16 {
                decode(i);
            }
        }) / 16.0;
        let t_dec = torch[format!("{name}_decoder_s")].as_f64().unwrap();
        if name == "vit_b" {
            deployed.push((
                "vit_b_decoder",
                "vit_b prompt encoder + mask decoder, per point prompt",
                dec,
            ));
            if let Some(m) = &bf16 {
                let p = |i: usize| {
                    [PointPrompt {
                        x: pts[2 * i] as f64,
                        y: pts[2 * i + 1] as f64,
                        label: 1,
                    }]
                };
                let t = timed(10, || {
                    for i in 0..16 {
                        m.decode_points(&e, &p(i)).unwrap();
                    }
                }) / 16.0;
                deployed.push((
                    "vit_b_decoder",
                    "vit_b prompt encoder + mask decoder, per point prompt, bf16",
                    t,
                ));
            }
        }
        if name == "vit_b"
            && let (Some(p), Some(t_set)) = (&photo, torch["photo_set_image_s"].as_f64())
        {
            let pic = segrs::data::image_io::read_image(p).unwrap();
            let (rgb, h, w) = (pic.to_rgb8(), pic.height, pic.width);
            let t = Instant::now();
            let e = sam.set_image(&rgb, h, w).unwrap();
            let s_set = t.elapsed().as_secs_f64();
            let (hf, wf) = (h as f64, w as f64);
            let t = Instant::now();
            let point = segrs::sam::predictor::Prompt {
                points: vec![(0.45 * wf, 0.4 * hf, 1)],
                ..Default::default()
            };
            let a = sam.predict(&e, &point, true).unwrap();
            let s_pred = t.elapsed().as_secs_f64();
            let boxed = segrs::sam::predictor::Prompt {
                points: vec![(0.6 * wf, 0.5 * hf, 0)],
                bbox: Some([0.1 * wf, 0.2 * hf, 0.9 * wf, 0.8 * hf]),
                ..Default::default()
            };
            let b = sam.predict(&e, &boxed, false).unwrap();
            let agree = |p: &segrs::sam::predictor::Prediction, key: &str| {
                let want = &io.get(key).unwrap().data;
                let got: Vec<u8> = (0..p.logits.len()).flat_map(|i| p.mask(i)).collect();
                got.iter()
                    .zip(want)
                    .filter(|(g, w)| **g as f32 == **w)
                    .count() as f64
                    / want.len() as f64
            };
            let t_pred = torch["photo_predict_s"].as_f64().unwrap();
            md.push_str(&format!(
                "| vit_b `set_image` on truck.jpg ({w}x{h}: resize, normalise, encoder) | {:.2} s | {:.2} s | {:.2}x | |\n",
                s_set, t_set, s_set / t_set
            ));
            md.push_str(&format!(
                "| vit_b `predict` on truck.jpg (one point, 3 masks at full size) | {:.0} ms | {:.0} ms | {:.2}x | masks agree on {:.4}% (point) / {:.4}% (box + negative point) of pixels |\n",
                s_pred * 1e3, t_pred * 1e3, s_pred / t_pred,
                100.0 * agree(&a, "photo.point.masks"),
                100.0 * agree(&b, "photo.box.masks")
            ));
        }
        let want_low = &io.get(&format!("{name}.low_res")).unwrap().data;
        let want_iou = &io.get(&format!("{name}.iou")).unwrap().data;
        let iou_err = iou
            .iter()
            .zip(want_iou)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        md.push_str(&format!(
            "| {name} prompt encoder + mask decoder, per point prompt | {:.1} ms | {:.1} ms | {:.2}x | logits {:.1e}, IoU max abs {:.1e} |\n",
            dec * 1e3,
            t_dec * 1e3,
            dec / t_dec,
            rel_l2(&low, want_low),
            iou_err
        ));
    }
    // SEGRS_BENCH_NO_RUNTIMES=1 leaves out ONNX Runtime and OpenVINO (their export and timing
    // take a few minutes).
    if !only && std::env::var("SEGRS_BENCH_NO_RUNTIMES").is_err() {
        md.push_str("\nThe same models exported to ONNX (opset 17, PyTorch's TorchScript exporter; `tools/bench_runtimes.py`), same weights, inputs and threads, in the runtimes users deploy with:\n\n");
        md.push_str(&match runtimes(&python, "sam", threads, repeats, &dir) {
            Ok(v) => runtime_table(&v, &deployed),
            Err(e) => format!("{e}\n"),
        });
    }
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    print!("{md}");
    if keep.is_some() {
        return; // iteration runs don't touch BENCHMARKS.md
    }
    write_section("sam", &md);
}
