//! Load on `segrs serve` (loopback only, bounded in time): SAM ViT-B with random weights (built
//! here from the official key list, no download), the shared demo photos, and many clients that
//! upload images and click on them.
//!
//! - interactive: SEGRS_LOAD_CLIENTS (32) clients for SEGRS_LOAD_SECONDS (60), each waiting
//!   SEGRS_LOAD_THINK_MS (4000, jittered by half) between actions, as people looking at each mask
//!   do; 5% of actions
//!   upload (mostly cached photos, plus SEGRS_LOAD_NEW_IMAGES (2) never seen, which run the
//!   encoder), the rest click. Click latency p50 / p99 against the bare decoder's time (the same
//!   predict call in this process on an idle machine).
//! - saturation: the same clients with no pause for a third of the time: requests per second,
//!   and the answers (503 under overload is expected, any other 5xx is a failure).
//!
//! The server's RSS is sampled every second (peak, after warm-up, at the end). Results go to
//! BENCHMARKS.md (section `serve`). SEGRS_LOAD_MODEL=tiny uses the reduced test fixture instead.

mod common;
use common::{cpu_name, random_vit_b, threads, write_section};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segrs::sam::any_model::AnySam;
use segrs::sam::predictor::Prompt;
use segrs::sam::sam2_predictor::Postprocess;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An image's bytes, and once uploaded its (id, width, height).
type Upload = (Vec<u8>, Option<(String, usize, usize)>);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default)]
struct Tally {
    clicks: Vec<f64>,
    uploads: Vec<f64>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
}

struct Phase {
    name: &'static str,
    seconds: f64,
    tally: Tally,
}

/// One client: uploads and clicks until `deadline`.
#[allow(clippy::too_many_arguments)]
fn client(
    base: &str,
    seed: u64,
    images: &[Upload],
    cached: &[(String, usize, usize)],
    think_ms: u64,
    deadline: Instant,
    tally: &Mutex<Tally>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut local = Tally::default();
    while Instant::now() < deadline {
        if think_ms > 0 {
            std::thread::sleep(Duration::from_millis(
                rng.random_range(think_ms / 2..=think_ms * 3 / 2),
            ));
        }
        let upload = rng.random_bool(0.05);
        let t = Instant::now();
        let res = if upload {
            let (bytes, _) = &images[rng.random_range(0..images.len())];
            agent.post(&format!("{base}/v1/images")).send_bytes(bytes)
        } else {
            let (id, w, h) = &cached[rng.random_range(0..cached.len())];
            let body = json!({
                "image_id": id,
                "points": [[rng.random_range(0.0..*w as f64), rng.random_range(0.0..*h as f64)]],
                "multimask": true,
            });
            agent
                .post(&format!("{base}/v1/sam/predict"))
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
        };
        let dt = t.elapsed().as_secs_f64();
        let status = match res {
            Ok(r) => {
                let s = r.status();
                let _ = r.into_string();
                s
            }
            Err(ureq::Error::Status(s, r)) => {
                let _ = r.into_string();
                s
            }
            Err(_) => {
                local.transport_errors += 1;
                continue;
            }
        };
        *local.statuses.entry(status).or_default() += 1;
        if status == 200 {
            if upload {
                local.uploads.push(dt);
            } else {
                local.clicks.push(dt);
            }
        }
    }
    let mut g = tally.lock().unwrap();
    g.clicks.extend(local.clicks);
    g.uploads.extend(local.uploads);
    for (k, v) in local.statuses {
        *g.statuses.entry(k).or_default() += v;
    }
    g.transport_errors += local.transport_errors;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let clients = env_or("SEGRS_LOAD_CLIENTS", 32) as usize;
    let seconds = env_or("SEGRS_LOAD_SECONDS", 60) as f64;
    let think_ms = env_or("SEGRS_LOAD_THINK_MS", 4000);
    let new_images = env_or("SEGRS_LOAD_NEW_IMAGES", 2) as usize;
    let tiny = std::env::var("SEGRS_LOAD_MODEL").is_ok_and(|v| v == "tiny");
    let data = std::env::var("SEGRS_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")))
        .join("sam_demo_images");
    if !data.is_dir() {
        eprintln!("SKIP: {} not found (set SEGRS_DATA)", data.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("segrs-serve-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = if tiny {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sam/tiny_sam.pth"
        ))
    } else {
        let p = dir.join("sam_vit_b_random.safetensors");
        random_vit_b(&p);
        p
    };
    // The photos, and never-seen variants of them (mirrored) to make the encoder run mid-load.
    let mut images: Vec<Upload> = Vec::new();
    for name in ["truck.jpg", "groceries.jpg", "dog.jpg", "cars.jpg"] {
        images.push((std::fs::read(data.join(name)).unwrap(), None));
    }
    for i in 0..new_images {
        let pic = segrs::data::image_io::read_image(
            &data.join(["truck.jpg", "dog.jpg", "groceries.jpg", "cars.jpg"][i % 4]),
        )
        .unwrap();
        let (w, h) = (pic.width, pic.height);
        let rgb = pic.to_rgb8();
        let mut flipped = vec![0u8; rgb.len()];
        for y in 0..h {
            for x in 0..w {
                let (a, b) = ((y * w + x) * 3, (y * w + (w - 1 - x)) * 3);
                flipped[a..a + 3].copy_from_slice(&rgb[b..b + 3]);
            }
        }
        // A different shade per variant, so that each is a new image.
        flipped
            .iter_mut()
            .for_each(|v| *v = v.saturating_add(i as u8 + 1));
        images.push((
            segrs::data::image_io::encode_png(w, h, 3, &flipped).unwrap(),
            None,
        ));
    }

    // The bare decoder: the predict call in this process, idle machine.
    let sam = AnySam::load(&ck).unwrap();
    let truck = segrs::data::image_io::read_image(&data.join("truck.jpg")).unwrap();
    let emb = sam
        .set_image(&truck.to_rgb8(), truck.height, truck.width)
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut bare: Vec<f64> = (0..30)
        .map(|_| {
            let p = Prompt {
                points: vec![(
                    rng.random_range(0.0..truck.width as f64),
                    rng.random_range(0.0..truck.height as f64),
                    1,
                )],
                ..Default::default()
            };
            let t = Instant::now();
            sam.predict(&emb, &p, true, &Postprocess::default())
                .unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let bare_p50 = percentile(&mut bare, 0.5);
    drop(emb);
    drop(sam);
    eprintln!(
        "bare decoder (truck, 3 masks at 1800x1200): {:.1} ms",
        bare_p50 * 1e3
    );

    let mut server = Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args(["serve", "--port", "0", "--sam", ck.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("http://"))
        .expect("server address");
    let base = line[line.find("http://").unwrap()..].trim().to_string();
    let pid = server.id();
    // Warm-up: the four photos encoded once.
    let t = Instant::now();
    let mut cached = Vec::new();
    for (bytes, info) in images.iter_mut().take(4) {
        let r: Value = ureq::post(&format!("{base}/v1/images"))
            .timeout(Duration::from_secs(600))
            .send_bytes(bytes)
            .unwrap()
            .into_json()
            .unwrap();
        let i = (
            r["image_id"].as_str().unwrap().to_string(),
            r["width"].as_u64().unwrap() as usize,
            r["height"].as_u64().unwrap() as usize,
        );
        *info = Some(i.clone());
        cached.push(i);
    }
    eprintln!(
        "warm-up: 4 photos encoded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let warm_rss = rss_mib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                samples.lock().unwrap().push(rss_mib(pid));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut phases = Vec::new();
    for (name, secs, think) in [
        ("interactive", seconds, think_ms),
        ("saturation", (seconds / 3.0).max(5.0), 0),
    ] {
        eprintln!("{name}: {clients} clients for {secs:.0} s (pause {think} ms)");
        let tally = Mutex::new(Tally::default());
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        std::thread::scope(|s| {
            for c in 0..clients {
                let (images, cached, tally, base) = (&images, &cached, &tally, &base);
                s.spawn(move || client(base, c as u64 + 1, images, cached, think, deadline, tally));
            }
        });
        phases.push(Phase {
            name,
            seconds: secs,
            tally: tally.into_inner().unwrap(),
        });
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let end_rss = rss_mib(pid);
    let samples = samples.lock().unwrap().clone();
    let peak = samples.iter().cloned().fold(warm_rss, f64::max);
    let quarter = samples.get(samples.len() / 4).cloned().unwrap_or(warm_rss);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let mut md = format!(
        "Measured on {} with {} threads, {} (`cargo bench --bench serve_load`): {clients} clients, the four demo photos cached at warm-up and {new_images} new images uploaded during the run. Bare decoder (the predict call in-process, idle, three masks at 1800x1200): **{:.1} ms**.\n\n| phase | time | requests/s | clicks | click p50 | click p99 | p50 / bare decoder | uploads | upload p50 | answers |\n|---|---|---|---|---|---|---|---|---|---|\n",
        cpu_name(),
        threads(),
        if tiny {
            "the reduced SAM fixture"
        } else {
            "SAM ViT-B (random weights)"
        },
        bare_p50 * 1e3
    );
    let mut bad = 0;
    for p in &mut phases {
        let n: usize = p.tally.statuses.values().sum();
        let answers: Vec<String> = p
            .tally
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .chain(
                (p.tally.transport_errors > 0)
                    .then(|| format!("no answer: {}", p.tally.transport_errors)),
            )
            .collect();
        bad += p
            .tally
            .statuses
            .iter()
            .filter(|(k, _)| **k >= 500 && **k != 503)
            .map(|(_, v)| v)
            .sum::<usize>()
            + p.tally.transport_errors;
        let (c50, c99) = (
            percentile(&mut p.tally.clicks, 0.5),
            percentile(&mut p.tally.clicks, 0.99),
        );
        let u50 = percentile(&mut p.tally.uploads, 0.5);
        md += &format!(
            "| {} | {:.0} s | {:.1} | {} | {:.1} ms | {:.1} ms | {:.2}x | {} | {:.0} ms | {} |\n",
            p.name,
            p.seconds,
            n as f64 / p.seconds,
            p.tally.clicks.len(),
            c50 * 1e3,
            c99 * 1e3,
            c50 / bare_p50,
            p.tally.uploads.len(),
            u50 * 1e3,
            answers.join(", ")
        );
    }
    let every: Vec<String> = samples
        .iter()
        .step_by(10)
        .map(|v| format!("{v:.0}"))
        .collect();
    md += &format!(
        "\nServer RSS: {warm_rss:.0} MiB after warm-up, {quarter:.0} MiB a quarter into the run, {end_rss:.0} MiB at the end, {peak:.0} MiB peak; every 10 s: {} MiB. 5xx other than 503, or no answer: {bad}.\n",
        every.join(", ")
    );
    println!("{md}");
    if !tiny {
        write_section("serve", &md);
    }
}
