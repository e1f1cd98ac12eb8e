//! `cargo bench --bench unet`: the classic U-Net (3 -> 21 classes, 31.0 M parameters) in segrs
//! and in PyTorch on this machine, same thread count, one run:
//!
//! * forward 1x3x256x256, eval mode: segrs as loaded (BatchNorm layers) and segrs' inference
//!   form (BatchNorm folded into the convolutions), against PyTorch eager under `no_grad`;
//! * one training step 2x3x256x256: cross-entropy, backward, Adam(W) update.
//!
//! The PyTorch side runs tools/bench_unet_torch.py with the interpreter in $SEGRS_TORCH_PYTHON
//! (default /tmp/segrs-refenv/bin/python, made by ../shared/tools/reference-env.sh); without it
//! only segrs is timed. Results go to stdout and replace the U-Net section of BENCHMARKS.md.
//! Environment: SEGRS_BENCH_THREADS (default: all cores), SEGRS_BENCH_REPEATS (default 5).

mod common;
use common::{
    cpu_name, repeats, runtime_table, runtimes, thread_pool, timed, torch_python, write_section,
};

use burn::prelude::*;
use segrs::models::tensor_io::tensor4;
use segrs::models::unet::{TrainOps, UNet, UNetConfig};

fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One training run's step time (median) and memory.
struct TrainRun {
    step_s: f64,
    /// Resident memory before the first step (program and model), MB.
    base_mb: f64,
    /// Peak resident memory of the process, MB.
    peak_mb: f64,
}

/// Runs this bench again as a child doing only training steps on `ops` (`engine` or
/// `generic`); its JSON line back.
fn train_child(ops: &str, steps: usize) -> Option<TrainRun> {
    let out = std::process::Command::new(std::env::current_exe().ok()?)
        .env("SEGRS_BENCH_TRAIN_CHILD", ops)
        .env("SEGRS_BENCH_REPEATS", steps.to_string())
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last()?).ok()?;
    Some(TrainRun {
        step_s: v["step_s"].as_f64()?,
        base_mb: v["base_mb"].as_f64()?,
        peak_mb: v["peak_mb"].as_f64()?,
    })
}

/// The child's job: `steps` training steps 2x3x256x256 (cross-entropy, AdamW) on `ops`.
fn train_steps(ops: TrainOps, steps: usize) {
    let xb = noise(2 * 3 * 256 * 256, 2);
    let labels: Vec<u32> = noise(2 * 256 * 256, 3)
        .iter()
        .map(|v| ((v + 1.0) * 10.49) as u32)
        .collect();
    let step = common::unet_train_step(ops, xb, labels);
    let base_mb = common::rss_mb();
    let step_s = timed(steps, step);
    println!(
        "{}",
        serde_json::json!({"step_s": step_s, "base_mb": base_mb, "peak_mb": common::peak_rss_mb()})
    );
}

fn main() {
    let threads = thread_pool();
    let repeats = repeats(5);
    if let Ok(ops) = std::env::var("SEGRS_BENCH_TRAIN_CHILD") {
        let ops = if ops == "generic" {
            TrainOps::Generic
        } else {
            TrainOps::Engine
        };
        train_steps(ops, repeats);
        return;
    }
    let cfg = UNetConfig::classic(3, 21);
    let dev = Device::flex();

    // Forward, eval mode.
    let model = UNet::new(&cfg, &dev).valid();
    let folded = model.fold_batchnorm();
    let x = tensor4(noise(3 * 256 * 256, 1), [1, 3, 256, 256], &dev);
    let sync = |t: Tensor<4>| {
        let _ = t.into_data();
    };
    let fwd_bn = timed(repeats, || sync(model.forward(x.clone())));
    let fwd_folded = timed(repeats, || sync(folded.forward(x.clone())));
    let engine = segrs::models::unet::host::HostUNet::from_model(&model).unwrap();
    let xh = noise(3 * 256 * 256, 1);
    let fwd_engine = timed(repeats, || {
        std::hint::black_box(engine.forward(&xh, 256, 256).unwrap());
    });

    // Training steps, each path in a child process of its own so that its peak memory is its
    // own. SEGRS_BENCH_FORWARD_ONLY=1 skips them (slow), for quick iterations.
    let (train, train_generic) = if std::env::var("SEGRS_BENCH_FORWARD_ONLY").is_ok() {
        (None, None)
    } else {
        let steps = (repeats / 2).max(2);
        (train_child("engine", steps), train_child("generic", steps))
    };
    let train_s = train.as_ref().map_or(f64::NAN, |t| t.step_s);

    let python = torch_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_unet_torch.py");
    let parity_dir = std::env::temp_dir().join(format!("segrs-unet-parity-{}", std::process::id()));
    let torch: Option<serde_json::Value> = std::process::Command::new(&python)
        .args([
            script,
            &threads.to_string(),
            &repeats.to_string(),
            parity_dir.to_str().unwrap(),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(o.stdout.trim_ascii()).ok());

    let cpu = cpu_name();
    // Full-size parity: the classic network saved by PyTorch, loaded by segrs.
    let parity = torch.as_ref().and_then(|_| {
        let loaded = segrs::models::unet::checkpoint::load(
            &parity_dir.join("unet_classic.pth"),
            (Some(3), Some(21)),
            &dev,
        )
        .ok()?;
        let io = segrs::weights::safetensors::read(&parity_dir.join("io.safetensors")).ok()?;
        let (x, want) = (io.get("input")?, io.get("logits")?);
        let rel = |got: &[f32]| {
            let num: f64 = got
                .iter()
                .zip(&want.data)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.data.iter().map(|b| (*b as f64).powi(2)).sum();
            (num / den).sqrt()
        };
        let burn_out = segrs::models::tensor_io::to_vec(
            loaded
                .model
                .valid()
                .forward(segrs::models::tensor_io::from_host::<4>(x, &dev)),
        );
        let eng = segrs::models::unet::host::HostUNet::from_model(&loaded.model)
            .ok()?
            .forward(&x.data, 128, 192)
            .ok()?;
        Some((rel(&burn_out), rel(&eng)))
    });
    // The same network in ONNX Runtime and OpenVINO (SEGRS_BENCH_NO_RUNTIMES=1 leaves them out).
    // bf16, where the CPU has AVX512_BF16 (elsewhere `cargo bench --bench bf16` measures its
    // accuracy on the portable kernel)
    let fwd_bf16 = segrs::ops::bf16::has_native().then(|| {
        let e = segrs::models::unet::host::HostUNet::from_model_with(
            &model,
            segrs::ops::Precision::Bf16,
        )
        .unwrap();
        timed(repeats, || {
            std::hint::black_box(e.forward(&xh, 256, 256).unwrap());
        })
    });
    let deployed = (torch.is_some() && std::env::var("SEGRS_BENCH_NO_RUNTIMES").is_err())
        .then(|| runtimes(&python, "unet", threads, repeats, &parity_dir));
    std::fs::remove_dir_all(&parity_dir).ok();
    let mut md = String::new();
    md.push_str(&format!(
        "Classic U-Net (3 -> 21 classes, 31,044,821 parameters), {cpu}, {threads} thread(s), median of {repeats} runs, one run of `cargo bench --bench unet`.\n\n"
    ));
    md.push_str("| what | segrs (flex) | PyTorch | segrs / PyTorch |\n|---|---|---|---|\n");
    let t_fwd = torch.as_ref().and_then(|t| t["forward_s"].as_f64());
    let t_train = torch.as_ref().and_then(|t| t["train_step_s"].as_f64());
    let t_peak = torch.as_ref().and_then(|t| t["train_peak_mb"].as_f64());
    let t_base = torch.as_ref().and_then(|t| t["train_base_mb"].as_f64());
    let row = |name: &str, s: f64, t: Option<f64>| match t {
        Some(t) => format!(
            "| {name} | {:.1} ms | {:.1} ms | {:.2}x |\n",
            s * 1e3,
            t * 1e3,
            s / t
        ),
        None => format!("| {name} | {:.1} ms | n/a | n/a |\n", s * 1e3),
    };
    md.push_str(&row(
        "forward 1x3x256x256, BatchNorm layers as loaded",
        fwd_bn,
        t_fwd,
    ));
    md.push_str(&row(
        "forward 1x3x256x256, BatchNorm folded (burn ops)",
        fwd_folded,
        t_fwd,
    ));
    md.push_str(&row(
        "forward 1x3x256x256, segrs host engine (folded BN, Winograd F(4x4,3x3) from 32 channels, F(2x2,3x3) from 8, unfolded below, gemm, fused bias + ReLU)",
        fwd_engine,
        t_fwd,
    ));
    if let Some(t) = &train {
        md.push_str(&row(
            "train step 2x3x256x256 (CE + Adam), segrs' training operations (engine kernels + backward)",
            t.step_s,
            t_train,
        ));
    }
    if let Some(t) = &train_generic {
        md.push_str(&row(
            "train step 2x3x256x256 (CE + Adam), burn's generic operations",
            t.step_s,
            t_train,
        ));
    }
    let mem_row = |name: &str, segrs: f64, torch: Option<f64>| match torch {
        Some(t) => format!(
            "| {name} | {segrs:.0} MB | {t:.0} MB | {:.2}x |\n",
            segrs / t
        ),
        None => format!("| {name} | {segrs:.0} MB | n/a | n/a |\n"),
    };
    for (t, what) in [
        (&train, "training operations"),
        (&train_generic, "generic operations"),
    ] {
        if let Some(t) = t {
            md.push_str(&mem_row(
                &format!("train step peak memory above the process before the first step ({what})"),
                t.peak_mb - t.base_mb,
                t_peak.zip(t_base).map(|(p, b)| p - b),
            ));
            md.push_str(&mem_row(
                &format!("train step peak resident memory of the process ({what})"),
                t.peak_mb,
                t_peak,
            ));
        }
    }
    match &torch {
        Some(t) => md.push_str(&format!("\nPyTorch {} eager, `torch.set_num_threads({threads})`, forward under `no_grad`.\n", t["torch"].as_str().unwrap_or("?"))),
        None => md.push_str(&format!("\nPyTorch was not timed: no working interpreter at {python} (set SEGRS_TORCH_PYTHON).\n")),
    }
    if let Some((a, b)) = parity {
        md.push_str(&format!(
            "Full-size parity (the classic network's `state_dict` saved by PyTorch with random weights and BatchNorm statistics, input 1x3x128x192): logits relative L2 error {a:.1e} (burn ops), {b:.1e} (CPU engine).\n"
        ));
    }
    match deployed {
        Some(Ok(v)) => {
            md.push_str("\nThe same network exported to ONNX (opset 17, PyTorch's TorchScript exporter; `tools/bench_runtimes.py`), same weights and threads, in the runtimes users deploy with:\n\n");
            let mut rows = vec![(
                "unet_forward",
                "forward 1x3x256x256 (segrs host engine)",
                fwd_engine,
            )];
            if let Some(t) = fwd_bf16 {
                rows.push((
                    "unet_forward",
                    "forward 1x3x256x256 (segrs host engine, bf16)",
                    t,
                ));
            }
            md.push_str(&runtime_table(&v, &rows));
        }
        Some(Err(e)) => md.push_str(&format!("\n{e}\n")),
        None => {}
    }
    print!("{md}");
    if torch.is_some() && train_s.is_finite() {
        write_section("unet", &md);
    }
}
