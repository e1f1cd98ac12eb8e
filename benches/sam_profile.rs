//! `cargo bench --bench sam_profile`: where SAM ViT-B's image encoder spends its time, op by op
//! (`segrs::ops::profile` scopes in the encoder's forward), on a 1x3x1024x1024 input with random
//! weights under the official keys. For each op: calls per forward, time, share of the forward,
//! floating-point operations and the rate achieved; against the unprofiled forward's median.
//! Needs no reference environment. Results go to stdout and to BENCHMARKS.md.
//! Environment: SEGRS_BENCH_THREADS (default: all cores), SEGRS_BENCH_REPEATS (default 3).

mod common;
use common::{cpu_name, random_vit_b, repeats, threads, timed, write_section};

use segrs::models::sam::model::Sam;
use segrs::ops::profile;

fn main() {
    let threads = threads();
    let repeats = repeats(3);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
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
    let plain = timed(repeats, || {
        sam.image_encoder.forward(&x).unwrap();
    });
    profile::take();
    profile::enable(true);
    for _ in 0..repeats {
        sam.image_encoder.forward(&x).unwrap();
    }
    profile::enable(false);
    let ops = profile::take();
    let r = repeats as f64;
    let total: f64 = ops.iter().map(|o| o.seconds).sum::<f64>() / r;
    let mut md = format!(
        "SAM ViT-B image encoder, 1x3x1024x1024, {}, {threads} thread(s), mean of {repeats} profiled forwards; the unprofiled forward's median is {:.2} s.\n\n\
| op | calls | time | share | GFLOP | GFLOP/s |\n|---|---|---|---|---|---|\n",
        cpu_name(),
        plain
    );
    for o in &ops {
        let secs = o.seconds / r;
        let gflop = o.flops / r / 1e9;
        md += &format!(
            "| {} | {} | {:.0} ms | {:.1}% | {} | {} |\n",
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
        "| **all** | | **{:.0} ms** | 100% | {all_flops:.0} | {:.0} |\n",
        total * 1e3,
        all_flops / total
    );
    print!("{md}");
    write_section("sam_profile", &md);
}
