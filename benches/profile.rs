//! `cargo bench --bench profile`: where the host engine's forward passes spend their time, op by
//! op (`segrs::ops::profile` scopes in the models' forwards): SAM ViT-B's image encoder on a
//! 1x3x1024x1024 input (random weights under the official keys) and the classic U-Net (3 -> 21
//! classes, BatchNorm folded) on 1x3x256x256, and the classic U-Net's training step (2x3x256x256,
//! the training operations of `segrs::autodiff` forward and backward). For each op: calls per
//! run, time, share, floating-point operations and the rate achieved; against the unprofiled
//! run's median. Needs no reference environment. Results go to stdout and to BENCHMARKS.md.
//! Environment: SEGRS_BENCH_THREADS (default: all cores), SEGRS_BENCH_REPEATS (default 3),
//! SEGRS_PROFILE (sections, default `sam,unet,unet_train,maskrcnn_train`; `sam_decoder` is SAM's
//! decoder alone, `sam_tiny` MobileSAM's encoder alone; `sam` includes both). `maskrcnn_train`:
//! one Mask R-CNN training step (fresh weights, batch statistics, whole body trained; two
//! 256x320 images with 40 objects each, SGD), its phases timed and the engine's operations
//! profiled. SEGRS_BENCH_PRECISION=bf16 runs the inference sections (`sam`, `sam_tiny`, `unet`)
//! with bf16 products (their sections then end in `_bf16`).

mod common;
use common::{cpu_name, profiled, random_vit_b, repeats, table, thread_pool, write_section};

use segrs::models::sam::model::Sam;
use segrs::models::sam::prompt_encoder::PointPrompt;
use segrs::ops::profile::{self, OpTotal};

/// The inference sections' precision (SEGRS_BENCH_PRECISION, default f32), and the suffix of
/// their BENCHMARKS.md sections.
fn precision() -> (segrs::ops::Precision, &'static str) {
    match std::env::var("SEGRS_BENCH_PRECISION") {
        Ok(p) => match p.parse().expect("SEGRS_BENCH_PRECISION") {
            segrs::ops::Precision::F32 => (segrs::ops::Precision::F32, ""),
            segrs::ops::Precision::Bf16 => (segrs::ops::Precision::Bf16, "_bf16"),
        },
        Err(_) => (segrs::ops::Precision::F32, ""),
    }
}

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    // SEGRS_PROFILE=sam,unet,unet_train picks sections (default: all).
    let only = std::env::var("SEGRS_PROFILE").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s == name))
    };
    if wanted("sam") || wanted("sam_decoder") {
        sam_profiles(threads, repeats, !wanted("sam"));
    }
    if wanted("sam") || wanted("sam_tiny") {
        sam_tiny_profile(threads, repeats);
    }
    if wanted("unet") {
        unet_forward_profile(threads, repeats);
    }
    if wanted("unet_train") {
        unet_train_profile(threads, repeats);
    }
    if wanted("maskrcnn_train") {
        maskrcnn_train_profile(threads, repeats);
    }
}

/// One Mask R-CNN training step: the forward pass with its losses, the backward pass and the
/// SGD update, each timed; the engine's operations profiled inside; the rest is burn (strided
/// convolutions, fully connected layers, element-wise operations, the graph) and the host's
/// sampling.
fn maskrcnn_train_profile(threads: usize, repeats: usize) {
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::prelude::*;
    use rand::SeedableRng;
    use segrs::models::mask_rcnn::train::init::seeded_init;
    use segrs::models::mask_rcnn::train::losses::{Overrides, SamplingConfig, TrainImage, losses};
    use segrs::models::mask_rcnn::train::network::{self, Norm};
    let device = Device::flex().autodiff();
    let (mut net, frozen) = network::load(&seeded_init(2, 0), 5, Norm::Batch, &device).unwrap();
    let (h, w) = (256, 320);
    let image = |seed: usize| {
        let mut boxes = Vec::new();
        let mut masks = Vec::new();
        for k in 0..40 {
            let (x0, y0) = (
                (k * 37 + seed * 11) % (w - 30),
                (k * 53 + seed * 7) % (h - 30),
            );
            let (bw, bh) = (8 + (k * 13) % 22, 8 + (k * 17) % 22);
            boxes.push([x0 as f32, y0 as f32, (x0 + bw) as f32, (y0 + bh) as f32]);
            let mut m = vec![0u8; h * w];
            for y in y0..y0 + bh {
                m[y * w + x0..y * w + x0 + bw].fill(1);
            }
            masks.push(m);
        }
        TrainImage {
            pixels: (0..3 * h * w)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0)
                .collect(),
            size: (h, w),
            labels: vec![1; boxes.len()],
            boxes,
            masks,
        }
    };
    let batch = vec![image(0), image(1)];
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .init();
    let cfg = SamplingConfig::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let steps = repeats.max(2);
    let mut phases = [0.0f64; 3];
    let mut run = |profile_on: bool, phases: &mut [f64; 3]| {
        profile::enable(profile_on);
        let t = std::time::Instant::now();
        let (l, _) = losses(
            &net,
            &frozen,
            &batch,
            &cfg,
            &mut rng,
            &Overrides::default(),
            &device,
        );
        let total = l.total();
        let _ = total.clone().into_scalar::<f32>();
        let t1 = t.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(total.backward(), &net);
        let t2 = t.elapsed().as_secs_f64();
        net = optim.step(1e-3, net.clone(), grads);
        let _ = net.fc6.bias.val().into_data();
        let t3 = t.elapsed().as_secs_f64();
        profile::enable(false);
        phases[0] += t1;
        phases[1] += t2 - t1;
        phases[2] += t3 - t2;
    };
    let mut plain = [0.0f64; 3];
    run(false, &mut plain); // warm-up
    plain = [0.0; 3];
    for _ in 0..steps {
        run(false, &mut plain);
    }
    profile::take();
    for _ in 0..steps {
        run(true, &mut phases);
    }
    let mut ops = profile::take();
    let r = steps as f64;
    let step: f64 = plain.iter().sum::<f64>() / r;
    let measured: f64 = ops.iter().map(|o| o.seconds).sum::<f64>() / r;
    ops.push(OpTotal {
        name: "other (burn: strided convolutions, fully connected layers, element-wise, graph; host sampling)",
        calls: steps as u64,
        seconds: (step - measured).max(0.0) * r,
        flops: 0.0,
    });
    let md = table(
        &format!(
            "Mask R-CNN training step (ResNet-50 FPN, fresh weights, batch statistics, 2x3x256x320, 40 objects per image, SGD), {}, {threads} thread(s), mean of {steps} profiled steps; unprofiled: {:.2} s per step (forward with losses {:.2} s, backward {:.2} s, update {:.2} s).",
            cpu_name(),
            step,
            plain[0] / r,
            plain[1] / r,
            plain[2] / r
        ),
        &ops,
        steps,
    );
    print!("{md}");
    write_section("maskrcnn_train_profile", &md);
}

/// The encoders' input: a 1x3x1024x1024 pattern.
fn encoder_input() -> Vec<f32> {
    (0..3 * 1024 * 1024)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// SAM ViT-B's encoder and its prompt encoder + mask decoder (`decoder_only`: the decoder
/// alone, on one unprofiled encoder forward).
fn sam_profiles(threads: usize, repeats: usize, decoder_only: bool) {
    let dir = std::env::temp_dir().join(format!("segrs-sam-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vit_b.safetensors");
    random_vit_b(&path);
    let sam = Sam::load_with(&path, precision().0).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let x = encoder_input();
    if !decoder_only {
        sam_encoder_profile(&sam, &x, threads, repeats);
    }

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
            "SAM ViT-B prompt encoder + mask decoder, 16 single-point prompts (multimask), {}, {}, {threads} thread(s), mean of {decoder_repeats} profiled rounds; the unprofiled round's median is {:.1} ms ({:.1} ms per prompt).",
            cpu_name(),
            precision().0,
            plain * 1e3,
            plain * 1e3 / 16.0
        ),
        &ops,
        decoder_repeats,
    );
    print!("{md}");
    write_section(&format!("sam_decoder_profile{}", precision().1), &md);
}

/// MobileSAM's TinyViT encoder, random weights under its official keys.
fn sam_tiny_profile(threads: usize, repeats: usize) {
    let x = encoder_input();
    let dir = std::env::temp_dir().join(format!("segrs-sam-profile-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vit_t.safetensors");
    common::random_sam("vit_t", &path);
    let tiny = Sam::load_with(&path, precision().0).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let (plain, ops) = profiled(repeats * 3, || {
        tiny.image_encoder.forward(&x).unwrap();
    });
    let md = table(
        &format!(
            "MobileSAM TinyViT (vit_t) image encoder, 1x3x1024x1024, {}, {}, {threads} thread(s), mean of {} profiled forwards; the unprofiled forward's median is {:.0} ms.",
            cpu_name(),
            precision().0,
            repeats * 3,
            plain * 1e3
        ),
        &ops,
        repeats * 3,
    );
    print!("{md}");
    write_section(&format!("sam_tiny_profile{}", precision().1), &md);
}

/// The classic U-Net's forward on the host engine.
fn unet_forward_profile(threads: usize, repeats: usize) {
    let config = segrs::models::unet::UNetConfig::classic(3, 21);
    let unet = segrs::models::unet::UNet::new(&config, &burn::prelude::Device::flex());
    let host = segrs::models::unet::host::HostUNet::from_model_with(&unet, precision().0).unwrap();
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
            "Classic U-Net (3 -> 21 classes, BatchNorm folded), 1x3x256x256, {}, {}, {threads} thread(s), mean of {unet_repeats} profiled forwards; the unprofiled forward's median is {:.1} ms.",
            cpu_name(),
            precision().0,
            plain * 1e3
        ),
        &ops,
        unet_repeats,
    );
    print!("{md}");
    write_section(&format!("unet_profile{}", precision().1), &md);
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

/// SAM ViT-B's image encoder, op by op.
fn sam_encoder_profile(sam: &Sam, x: &[f32], threads: usize, repeats: usize) {
    let (plain, ops) = profiled(repeats, || {
        sam.image_encoder.forward(x).unwrap();
    });
    let md = table(
        &format!(
            "SAM ViT-B image encoder, 1x3x1024x1024, {}, {}, {threads} thread(s), mean of {repeats} profiled forwards; the unprofiled forward's median is {plain:.2} s.",
            cpu_name(),
            precision().0
        ),
        &ops,
        repeats,
    );
    print!("{md}");
    write_section(&format!("sam_profile{}", precision().1), &md);
}
