//! `cargo bench --bench profile`: where the host engine's forward passes spend their time, op by
//! op (`segrs::ops::profile` scopes in the models' forwards): SAM ViT-B's image encoder on a
//! 1x3x1024x1024 input (random weights under the official keys) and the classic U-Net (3 -> 21
//! classes, BatchNorm folded) on 1x3x256x256, and the classic U-Net's training step (2x3x256x256,
//! the training operations of `segrs::autodiff` forward and backward). For each op: calls per
//! run, time, share, floating-point operations and the rate achieved; against the unprofiled
//! run's median. Needs no reference environment. Results go to stdout and to BENCHMARKS.md.
//! Environment: SEGRS_BENCH_THREADS (default: all cores), SEGRS_BENCH_REPEATS (default 3),
//! SEGRS_PROFILE (sections, default `sam,unet,unet_train`).

mod common;
use common::{cpu_name, random_vit_b, repeats, thread_pool, timed, write_section};

use segrs::models::sam::model::Sam;
use segrs::models::sam::prompt_encoder::PointPrompt;
use segrs::ops::profile::{self, OpTotal};

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    // SEGRS_PROFILE=sam,unet,unet_train picks sections (default: all).
    let only = std::env::var("SEGRS_PROFILE").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s == name))
    };
    if wanted("sam") {
        sam_profiles(threads, repeats);
    }
    if wanted("unet") {
        unet_forward_profile(threads, repeats);
    }
    if wanted("unet_train") {
        unet_train_profile(threads, repeats);
    }
}

/// SAM ViT-B's encoder, its prompt encoder + mask decoder, and MobileSAM's encoder.
fn sam_profiles(threads: usize, repeats: usize) {
    let dir = std::env::temp_dir().join(format!("segrs-sam-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vit_b.safetensors");
    random_vit_b(&path);
    let sam = Sam::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let n = 3 * 1024 * 1024;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (plain, ops) = profiled(repeats, || {
        sam.image_encoder.forward(&x).unwrap();
    });
    let md = table(
        &format!(
            "SAM ViT-B image encoder, 1x3x1024x1024, {}, {threads} thread(s), mean of {repeats} profiled forwards; the unprofiled forward's median is {plain:.2} s.",
            cpu_name()
        ),
        &ops,
        repeats,
    );
    print!("{md}");
    write_section("sam_profile", &md);

    // SAM's prompt encoder + mask decoder per single-point prompt (multimask), on the
    // encoder's embedding of the same input; the image side is prepared by the warm-up call.
    let emb = sam.image_encoder.forward(&x).unwrap();
    let e = segrs::sam::predictor::ImageEmbedding::new(emb, 256, 64, (1024, 1024), (1024, 1024));
    let decode = || {
        for i in 0..16 {
            let p = [PointPrompt {
                x: (i * 61 % 1024) as f64 + 0.5,
                y: (i * 149 % 1024) as f64 + 0.5,
                label: 1,
            }];
            sam.decode_points(&e, &p).unwrap();
        }
    };
    let decoder_repeats = repeats * 5;
    let (plain, ops) = profiled(decoder_repeats, decode);
    let md = table(
        &format!(
            "SAM ViT-B prompt encoder + mask decoder, 16 single-point prompts (multimask), {}, {threads} thread(s), mean of {decoder_repeats} profiled rounds; the unprofiled round's median is {:.1} ms ({:.1} ms per prompt).",
            cpu_name(),
            plain * 1e3,
            plain * 1e3 / 16.0
        ),
        &ops,
        decoder_repeats,
    );
    print!("{md}");
    write_section("sam_decoder_profile", &md);

    // MobileSAM's TinyViT encoder, random weights under its official keys.
    let dir = std::env::temp_dir().join(format!("segrs-sam-profile-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vit_t.safetensors");
    common::random_sam("vit_t", &path);
    let tiny = Sam::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let (plain, ops) = profiled(repeats * 3, || {
        tiny.image_encoder.forward(&x).unwrap();
    });
    let md = table(
        &format!(
            "MobileSAM TinyViT (vit_t) image encoder, 1x3x1024x1024, {}, {threads} thread(s), mean of {} profiled forwards; the unprofiled forward's median is {:.0} ms.",
            cpu_name(),
            repeats * 3,
            plain * 1e3
        ),
        &ops,
        repeats * 3,
    );
    print!("{md}");
    write_section("sam_tiny_profile", &md);
}

/// The classic U-Net's forward on the host engine.
fn unet_forward_profile(threads: usize, repeats: usize) {
    let config = segrs::models::unet::UNetConfig::classic(3, 21);
    let unet = segrs::models::unet::UNet::new(&config, &burn::prelude::Device::flex());
    let host = segrs::models::unet::host::HostUNet::from_model(&unet).unwrap();
    let (h, w) = (256, 256);
    let x: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let unet_repeats = repeats * 5;
    let (plain, ops) = profiled(unet_repeats, || {
        host.forward(&x, h, w).unwrap();
    });
    let md = table(
        &format!(
            "Classic U-Net (3 -> 21 classes, BatchNorm folded), 1x3x256x256, {}, {threads} thread(s), mean of {unet_repeats} profiled forwards; the unprofiled forward's median is {:.1} ms.",
            cpu_name(),
            plain * 1e3
        ),
        &ops,
        unet_repeats,
    );
    print!("{md}");
    write_section("unet_profile", &md);
}

/// One training step of the classic U-Net (2x3x256x256, cross-entropy, AdamW) on the autodiff
/// CPU device: the engine's training operations forward and backward, burn's optimiser, and
/// the rest (burn's graph, concatenations, gradient sums) as the difference to the unprofiled
/// step.
fn unet_train_profile(threads: usize, repeats: usize) {
    let (n, h, w) = (2, 256, 256);
    let xb: Vec<f32> = (0..n * 3 * h * w)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let labels: Vec<u32> = (0..n * h * w).map(|i| (i * 31 % 21) as u32).collect();
    let mut step = common::unet_train_step(segrs::models::unet::TrainOps::Engine, xb, labels);
    let train_repeats = repeats.max(2);
    let (plain, mut ops) = profiled(train_repeats, &mut step);
    let r = train_repeats as f64;
    let measured: f64 = ops.iter().map(|o| o.seconds).sum::<f64>() / r;
    ops.push(OpTotal {
        name: "other (burn: graph, concatenations, gradient sums, ...)",
        calls: train_repeats as u64,
        seconds: (plain - measured).max(0.0) * r,
        flops: 0.0,
    });
    let md = table(
        &format!(
            "Classic U-Net training step (2x3x256x256, cross-entropy, AdamW), {}, {threads} thread(s), mean of {train_repeats} profiled steps; the unprofiled step's median is {:.0} ms.",
            cpu_name(),
            plain * 1e3
        ),
        &ops,
        train_repeats,
    );
    print!("{md}");
    write_section("unet_train_profile", &md);
}

/// The unprofiled median of `run` (seconds) and the totals of `repeats` profiled runs.
fn profiled(repeats: usize, mut run: impl FnMut()) -> (f64, Vec<OpTotal>) {
    let plain = timed(repeats, &mut run);
    profile::take();
    profile::enable(true);
    for _ in 0..repeats {
        run();
    }
    profile::enable(false);
    (plain, profile::take())
}

/// The markdown table of per-op totals over `repeats` runs, under `title`.
fn table(title: &str, ops: &[OpTotal], repeats: usize) -> String {
    let r = repeats as f64;
    let total: f64 = ops.iter().map(|o| o.seconds).sum::<f64>() / r;
    let mut md = format!(
        "{title}\n\n| op | calls | time | share | GFLOP | GFLOP/s |\n|---|---|---|---|---|---|\n"
    );
    for o in ops {
        let secs = o.seconds / r;
        let gflop = o.flops / r / 1e9;
        md += &format!(
            "| {} | {} | {:.1} ms | {:.1}% | {} | {} |\n",
            o.name,
            (o.calls as f64 / r).round(),
            secs * 1e3,
            100.0 * secs / total,
            if gflop > 0.05 {
                format!("{gflop:.1}")
            } else {
                "-".into()
            },
            if gflop > 0.05 {
                format!("{:.0}", gflop / secs)
            } else {
                "-".into()
            },
        );
    }
    let all_flops: f64 = ops.iter().map(|o| o.flops).sum::<f64>() / r / 1e9;
    md += &format!(
        "| **all** | | **{:.1} ms** | 100% | {all_flops:.1} | {:.0} |\n",
        total * 1e3,
        all_flops / total
    );
    md
}
