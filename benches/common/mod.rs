//! What the benchmarks share: timing, thread count, the CPU's name, BENCHMARKS.md sections.

use segrs::ops::profile::{self, OpTotal};
use std::time::Instant;

/// Median of `n` timed runs of `f` (seconds), after one warm-up run.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn timed(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// SEGRS_BENCH_THREADS, else all cores.
pub fn threads() -> usize {
    std::env::var("SEGRS_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Builds rayon's global pool with [`threads`] threads and returns that count; tunes the
/// allocator as the `segrs` binary does.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn thread_pool() -> usize {
    segrs::device::tune_allocator();
    let threads = threads();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    threads
}

/// SEGRS_BENCH_REPEATS, else `default`.
#[allow(dead_code)]
pub fn repeats(default: usize) -> usize {
    std::env::var("SEGRS_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The reference interpreter: SEGRS_TORCH_PYTHON, else the venv of
/// ../shared/tools/reference-env.sh.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn torch_python() -> String {
    std::env::var("SEGRS_TORCH_PYTHON").unwrap_or_else(|_| "/tmp/segrs-refenv/bin/python".into())
}

/// Relative L2 error of `a` against `b`.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The CPU model from /proc/cpuinfo.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Replaces the text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` in
/// BENCHMARKS.md.
pub fn write_section(name: &str, md: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let (begin, end) = (
        format!("<!-- bench:{name}:begin -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    if let Ok(text) = std::fs::read_to_string(path)
        && let (Some(a), Some(b)) = (text.find(&begin), text.find(&end))
    {
        std::fs::write(path, format!("{}{begin}\n{md}{}", &text[..a], &text[b..])).ok();
        eprintln!("updated {path}");
    }
}

/// The reference side of a benchmark: runs `python script args...` and parses the JSON line it
/// prints; with `keep` (SEGRS_BENCH_KEEP) the line is kept in `keep/torch.json` and reused on the
/// next run. None, with the reason on stderr, when it cannot run.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn reference_json(
    python: &str,
    script: &str,
    args: &[String],
    keep: Option<&std::path::Path>,
) -> Option<serde_json::Value> {
    let cached = keep.and_then(|d| std::fs::read(d.join("torch.json")).ok());
    let stdout = match cached {
        Some(bytes) => bytes,
        None => {
            eprintln!("PyTorch side ({python}) ...");
            match std::process::Command::new(python)
                .arg(script)
                .args(args)
                .output()
            {
                Ok(o) if o.status.success() => o.stdout,
                Ok(o) => {
                    eprintln!(
                        "PyTorch side failed:\n{}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    return None;
                }
                Err(e) => {
                    eprintln!("no PyTorch interpreter at {python}: {e}; set SEGRS_TORCH_PYTHON");
                    return None;
                }
            }
        }
    };
    if let Some(d) = keep {
        std::fs::write(d.join("torch.json"), &stdout).ok();
    }
    match serde_json::from_slice(stdout.trim_ascii()) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{script}: no JSON line on stdout: {e}");
            None
        }
    }
}

/// SAM ViT-B under the official keys with small random weights (norm weights 1, biases 0).
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn random_vit_b(path: &std::path::Path) {
    random_sam("vit_b", path)
}

/// SAM `variant` (`vit_b`, or `vit_t` for MobileSAM) under the official keys with small random
/// weights (norm weights and BatchNorm variances 1, biases and means 0).
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn random_sam(variant: &str, path: &std::path::Path) {
    let keys: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sam/official_keys.json"
        ))
        .unwrap(),
    )
    .unwrap();
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let mut tensors = std::collections::BTreeMap::new();
    for k in keys[variant].as_array().unwrap() {
        let key = k[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = k[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if key.ends_with(".bias") || key.ends_with("running_mean") {
            vec![0.0; n]
        } else if key.ends_with("running_var") || (shape.len() == 1 && key.ends_with(".weight")) {
            vec![1.0; n]
        } else {
            (0..n).map(|_| rng.random_range(-0.02..0.02)).collect()
        };
        tensors.insert(key, segrs::weights::HostTensor::new(shape, data));
    }
    segrs::weights::safetensors::write(path, &tensors, &std::collections::BTreeMap::new()).unwrap();
}

/// The deployment runtimes' side (tools/bench_runtimes.py): the same models exported to ONNX and
/// timed in ONNX Runtime and OpenVINO (f32, and bf16 where the CPU has it). `Err` says why not.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn runtimes(
    python: &str,
    which: &str,
    threads: usize,
    repeats: usize,
    dir: &std::path::Path,
) -> Result<serde_json::Value, String> {
    eprintln!("ONNX Runtime / OpenVINO side ({which}) ...");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_runtimes.py");
    let o = std::process::Command::new(python)
        .arg(script)
        .args([which.to_string(), threads.to_string(), repeats.to_string()])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(format!(
            "tools/bench_runtimes.py failed: {}",
            err.lines().last().unwrap_or("")
        ));
    }
    serde_json::from_slice(o.stdout.trim_ascii())
        .map_err(|e| format!("tools/bench_runtimes.py: unreadable output ({e})"))
}

/// A table of segrs against the deployment runtimes: one row per `(key in the script's JSON,
/// what, segrs seconds)`, each runtime's time, segrs' ratio to it, and its output's relative L2
/// error against PyTorch.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn runtime_table(v: &serde_json::Value, rows: &[(&str, &str, f64)]) -> String {
    let runtimes = [
        (
            "onnxruntime",
            format!("ONNX Runtime {}", v["ort_version"].as_str().unwrap_or("?")),
        ),
        (
            "openvino_f32",
            format!(
                "OpenVINO {} f32",
                v["openvino_version"].as_str().unwrap_or("?")
            ),
        ),
        (
            "openvino_bf16",
            format!(
                "OpenVINO {} bf16",
                v["openvino_version"].as_str().unwrap_or("?")
            ),
        ),
    ];
    let mut md = String::from("| what | segrs (f32 unless the row says bf16) |");
    for (_, name) in &runtimes {
        md.push_str(&format!(" {name} | segrs / it |"));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|---|".repeat(runtimes.len()));
    md.push('\n');
    let time = |s: f64| {
        if s >= 1.0 {
            format!("{s:.2} s")
        } else {
            format!("{:.1} ms", s * 1e3)
        }
    };
    for (key, what, segrs) in rows {
        md.push_str(&format!("| {what} | {} |", time(*segrs)));
        for (rt, _) in &runtimes {
            match v[key][rt].as_f64() {
                Some(t) => md.push_str(&format!(
                    " {} (rel. L2 {:.1e}) | {:.2}x |",
                    time(t),
                    v[key][format!("{rt}_rel_l2")].as_f64().unwrap_or(f64::NAN),
                    segrs / t
                )),
                None if *rt == "openvino_bf16" && v["openvino_bf16"] == false => {
                    md.push_str(" no bf16 on this CPU | |")
                }
                None => md.push_str(" n/a | |"),
            }
        }
        md.push('\n');
    }
    md
}

/// This process's resident memory now, MB (Linux; NaN elsewhere).
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1048576.0)
}

/// This process's peak resident memory so far, MB (`getrusage`'s `ru_maxrss`).
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    u.ru_maxrss as f64 / 1024.0
}

/// One training step of the classic U-Net (3 -> 21 classes) on the 2x3x256x256 batch `x` with
/// `labels` on the autodiff CPU device: cross-entropy (burn's own on the generic path),
/// backward, AdamW (lr 1e-3, no weight decay). `ops` picks the training operations. burn
/// initialises parameters on first use; they are materialised before the step is returned, so
/// that memory measured then holds the model.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn unet_train_step(
    ops: segrs::models::unet::TrainOps,
    x: Vec<f32>,
    labels: Vec<u32>,
) -> impl FnMut() {
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::prelude::*;
    use segrs::models::unet::{TrainOps, UNet, UNetConfig};
    let ad = Device::flex().autodiff();
    let mut model = UNet::new(&UNetConfig::classic(3, 21), &ad).with_train_ops(ops);
    let _ = model.clone().into_record();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_epsilon(1e-8)
        .init();
    let loss_cfg = segrs::losses::LossConfig::parse("ce", None, 21, None).unwrap();
    move || {
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 256, 256]), &ad);
        let t = loss_cfg.targets(&labels, 2, 256, 256, &ad);
        let logits = model.forward(xt);
        let loss = match ops {
            TrainOps::Engine => loss_cfg.forward(logits, &t).0,
            TrainOps::Generic => segrs::losses::cross_entropy(logits, &t),
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let _p = segrs::ops::profile::scope("AdamW update (burn)", 0.0);
        model = optim.step(1e-3, model.clone(), grads);
        let _ = model.out_conv.weight.val().into_data();
    }
}

/// The unprofiled median of `run` (seconds) and the totals of `repeats` profiled runs.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn profiled(repeats: usize, mut run: impl FnMut()) -> (f64, Vec<OpTotal>) {
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
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn table(title: &str, ops: &[OpTotal], repeats: usize) -> String {
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
