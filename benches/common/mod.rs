//! What the benchmarks share: timing, thread count, the CPU's name, BENCHMARKS.md sections.

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

/// Builds rayon's global pool with [`threads`] threads and returns that count.
#[allow(dead_code)] // each bench compiles this module; not all of them call this
pub fn thread_pool() -> usize {
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
    for k in keys["vit_b"].as_array().unwrap() {
        let key = k[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = k[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if key.ends_with(".bias") {
            vec![0.0; n]
        } else if shape.len() == 1 && key.ends_with(".weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| rng.random_range(-0.02..0.02)).collect()
        };
        tensors.insert(key, segrs::weights::HostTensor::new(shape, data));
    }
    segrs::weights::safetensors::write(path, &tensors, &std::collections::BTreeMap::new()).unwrap();
}
