//! `cargo bench --bench maskrcnn`: torchvision's Mask R-CNN (ResNet-50 + FPN, v1) in segrs and
//! in torchvision on this machine, same thread count, same weights (torchvision saves them with
//! `torch.save`, segrs loads the `.pth`), one run: the whole predictor (transform, network,
//! postprocessing, masks pasted at the photo's size) on a photo resized to 1216x800, so the
//! network sees 800x1216; and whether both find the same detections.
//!
//! The PyTorch side is tools/bench_maskrcnn_torch.py, run with $SEGRS_TORCH_PYTHON (default
//! /tmp/segrs-refenv/bin/python from ../shared/tools/reference-env.sh); without it nothing is
//! timed. The photo is `../shared/data/sam_demo_images/truck.jpg` (or $SEGRS_BENCH_PHOTO).
//! Results go to stdout and to the Mask R-CNN section of BENCHMARKS.md. Environment:
//! SEGRS_BENCH_THREADS (default all cores), SEGRS_BENCH_REPEATS (default 3). With
//! SEGRS_BENCH_ONNX=1, tools/bench_maskrcnn_onnx.py also exports the same model to ONNX and times
//! ONNX Runtime and OpenVINO on the same photo.

mod common;
use common::{cpu_name, repeats, thread_pool, timed, torch_python, write_section};

use segrs::models::mask_rcnn::{MaskRcnn, MaskRcnnConfig};

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photo = std::env::var("SEGRS_BENCH_PHOTO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/sam_demo_images/truck.jpg"));
    if !photo.is_file() {
        eprintln!(
            "SKIP: no photo at {} (set SEGRS_BENCH_PHOTO)",
            photo.display()
        );
        return;
    }
    let python = torch_python();
    let dir = std::env::temp_dir().join(format!("segrs-bench-maskrcnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("PyTorch side ({python}) ...");
    let script = |name: &str| run_script(&python, &root.join(name), threads, repeats, &dir, &photo);
    let torch = match script("tools/bench_maskrcnn_torch.py") {
        Ok(v) => v,
        Err(e) => {
            eprintln!("PyTorch side: {e}; set SEGRS_TORCH_PYTHON");
            return;
        }
    };
    let model = MaskRcnn::load(&dir.join("maskrcnn_v1.pth")).unwrap();
    let pic = segrs::data::image_io::read_image(&dir.join("photo.png")).unwrap();
    let rgb = pic.to_rgb8();
    let cfg = MaskRcnnConfig::default();
    let mut pred = None;
    let secs = timed(repeats, || {
        pred = Some(model.predict(&rgb, pic.height, pic.width, &cfg).unwrap());
    });
    let pred = pred.unwrap();
    // Pair each torchvision detection with segrs' detection of the same class that overlaps it
    // most; report how many pair up (IoU > 0.99), how many sit at the same rank, and the
    // largest box and score differences of the pairs.
    let tb: Vec<[f32; 4]> = torch["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| std::array::from_fn(|k| b[k].as_f64().unwrap() as f32))
        .collect();
    let ts: Vec<f32> = torch["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let tl: Vec<usize> = torch["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (mut paired, mut same_rank, mut max_box, mut max_score) = (0, 0, 0.0f32, 0.0f32);
    for (i, b) in tb.iter().enumerate() {
        let best = (0..pred.boxes.len())
            .filter(|&j| pred.labels[j] == tl[i])
            .map(|j| (j, segrs::ops::boxes::iou(b, &pred.boxes[j])))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, iou)) = best.filter(|(_, iou)| *iou > 0.99) {
            let _ = iou;
            paired += 1;
            same_rank += (i == j) as usize;
            max_box = (0..4)
                .map(|k| (b[k] - pred.boxes[j][k]).abs())
                .fold(max_box, f32::max);
            max_score = max_score.max((ts[i] - pred.scores[j]).abs());
        }
    }
    let t = torch["seconds"].as_f64().unwrap();
    let parity = format!(
        "{paired} of torchvision's {} detections found by segrs (segrs has {}; same class, IoU > 0.99), {same_rank} at the same rank; boxes within {max_box:.1e} px, scores within {max_score:.1e}",
        tb.len(),
        pred.labels.len()
    );
    let md = format!(
        "Mask R-CNN (ResNet-50 + FPN, torchvision v1 recipe, random weights), {cpu}, {threads} thread(s), median of {repeats} runs, one run of `cargo bench --bench maskrcnn`; PyTorch {} / torchvision {} eager under `inference_mode`.\n\n\
| what | segrs | torchvision | segrs / torchvision | parity |\n|---|---|---|---|---|\n\
| whole predictor, photo 1216x800 (network input 800x1216), {n} detections | {secs:.2} s | {t:.2} s | {ratio:.2}x | {parity} |\n\n",
        torch["torch"].as_str().unwrap_or("?"),
        torch["torchvision"].as_str().unwrap_or("?"),
        cpu = cpu_name(),
        n = pred.labels.len(),
        ratio = secs / t,
    );
    let mut md = md;
    if std::env::var("SEGRS_BENCH_ONNX").is_ok() {
        eprintln!("ONNX Runtime / OpenVINO side ...");
        md.push_str(&match script("tools/bench_maskrcnn_onnx.py") {
            Ok(v) => onnx_rows(&v, secs),
            Err(e) => format!("ONNX side: {e}\n\n"),
        });
    }
    print!("{md}");
    write_section("maskrcnn", &md);
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs a `tools/` script with (threads, repeats, dir, photo) and reads the JSON line it prints.
fn run_script(
    python: &str,
    script: &std::path::Path,
    threads: usize,
    repeats: usize,
    dir: &std::path::Path,
    photo: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let o = std::process::Command::new(python)
        .arg(script)
        .args([threads.to_string(), repeats.to_string()])
        .args([dir, photo])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    serde_json::from_slice(o.stdout.trim_ascii())
        .map_err(|e| format!("{}: unreadable output ({e})", script.display()))
}

/// Rows for the same model and photo in ONNX Runtime and OpenVINO (tools/bench_maskrcnn_onnx.py).
fn onnx_rows(v: &serde_json::Value, segrs_secs: f64) -> String {
    let mut md = String::from(
        "| runtime (same model exported to ONNX, opset 11) | time | segrs / runtime |\n|---|---|---|\n",
    );
    if let Some(t) = v["onnxruntime"].as_f64() {
        md.push_str(&format!(
            "| ONNX Runtime {} | {t:.2} s | {:.2}x |\n",
            v["ort_version"].as_str().unwrap_or("?"),
            segrs_secs / t
        ));
    }
    match v["openvino_f32"].as_f64() {
        Some(t) => md.push_str(&format!(
            "| OpenVINO {} f32 | {t:.2} s | {:.2}x |\n",
            v["openvino_version"].as_str().unwrap_or("?"),
            segrs_secs / t
        )),
        None => md.push_str(&format!(
            "| OpenVINO {} f32 | does not convert the export ({}) | |\n",
            v["openvino_version"].as_str().unwrap_or("?"),
            v["openvino_error"].as_str().unwrap_or("?")
        )),
    }
    md.push('\n');
    md
}
