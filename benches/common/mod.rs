//! What the benchmarks share: timing, thread count, the CPU's name, BENCHMARKS.md sections.

use std::time::Instant;

/// Median of `n` timed runs of `f` (seconds), after one warm-up run.
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
