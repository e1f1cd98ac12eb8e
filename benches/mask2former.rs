//! `cargo bench --bench mask2former`: Mask2Former (Swin-T, the COCO panoptic architecture,
//! random weights) in segrs and in `transformers` on this machine, same thread count, same
//! weights (`save_pretrained`'s folder, which segrs loads as users' downloads), one run: the
//! whole predictor (the image processor at its default size, short side 800, the network, and
//! the panoptic post-processing at the photo's size), and the logits' agreement.
//!
//! The reference side is tools/bench_mask2former_torch.py, run with $SEGRS_TORCH_PYTHON
//! (default /tmp/segrs-refenv/bin/python from ../shared/tools/reference-env.sh); without it
//! nothing is timed. The photo is a COCO val2017 image from
//! `../shared/data/coco_panoptic_sample` (or $SEGRS_BENCH_PHOTO). Results go to stdout and to
//! the Mask2Former section of BENCHMARKS.md. Environment: SEGRS_BENCH_THREADS (default all
//! cores), SEGRS_BENCH_REPEATS (default 3).

mod common;
use common::{
    cpu_name, profiled, reference_json, rel_l2, repeats, table, thread_pool, timed, torch_python,
    write_section,
};

use segrs::models::mask2former::{Mask2Former, PostprocessConfig, postprocess::panoptic};

fn main() {
    let threads = thread_pool();
    let repeats = repeats(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photo = std::env::var("SEGRS_BENCH_PHOTO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            root.join(
                "../shared/data/coco_panoptic_sample/sample_data/input_images/000000142238.jpg",
            )
        });
    if !photo.is_file() {
        eprintln!(
            "SKIP: no photo at {} (set SEGRS_BENCH_PHOTO)",
            photo.display()
        );
        return;
    }
    let python = torch_python();
    let dir = std::env::temp_dir().join(format!("segrs-bench-mask2former-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = root.join("tools/bench_mask2former_torch.py");
    let args = [
        threads.to_string(),
        repeats.to_string(),
        dir.display().to_string(),
        photo.display().to_string(),
    ];
    let Some(torch) = reference_json(&python, script.to_str().unwrap(), &args, None) else {
        return;
    };
    let model = Mask2Former::load(&dir).unwrap();
    let pic = segrs::data::image_io::read_image(&photo).unwrap();
    let rgb = pic.to_rgb8();
    let cfg = PostprocessConfig::default();
    let mut out = None;
    let secs = timed(repeats, || {
        let pred = model.predict(&rgb, pic.height, pic.width);
        let pan = panoptic(&pred, (pic.height, pic.width), &cfg);
        out = Some((pred, pan));
    });
    let (pred, pan) = out.unwrap();
    // Parity on the reference's own pixels (the resize filters differ by a level on a few).
    let reference = segrs::weights::safetensors::read(&dir.join("reference.safetensors")).unwrap();
    let px = &reference.tensors["pixel_values"];
    let same = model.forward(&px.data, (px.shape[1], px.shape[2]));
    let class_err = rel_l2(&same.class_logits, &reference.tensors["class_logits"].data);
    let mask_err = rel_l2(&same.mask_logits, &reference.tensors["mask_logits"].data);
    let same_segments = panoptic(&same, (pic.height, pic.width), &cfg)
        .segments
        .len();
    let t = torch["seconds"].as_f64().unwrap();
    let input = &torch["input"];
    let md = format!(
        "Mask2Former (Swin-T backbone, COCO panoptic architecture: 100 queries, 6 deformable encoder layers, 9 masked-attention layers, 133 classes; random weights), {cpu}, {threads} thread(s), median of {repeats} runs, one run of `cargo bench --bench mask2former`; PyTorch {} / transformers {} eager under `inference_mode`.\n\n\
| what | segrs | transformers | segrs / transformers | parity (same pixels) |\n|---|---|---|---|---|\n\
| whole predictor, photo {pw}x{ph} (network input {}x{}), panoptic output: {} segments here, {} there | {secs:.2} s | {t:.2} s | {ratio:.2}x | class logits rel L2 {class_err:.1e}, mask logits {mask_err:.1e}; {same_segments} segments from the reference's pixels |\n\n",
        torch["torch"].as_str().unwrap_or("?"),
        torch["transformers"].as_str().unwrap_or("?"),
        input[0],
        input[1],
        pan.segments.len(),
        torch["segments"],
        cpu = cpu_name(),
        pw = pic.width,
        ph = pic.height,
        ratio = secs / t,
    );
    drop(pred);
    // Where segrs' time goes (the scopes of the model's forward; preprocessing and the
    // post-processing outside them).
    let (_, ops) = profiled(1, || {
        model.predict(&rgb, pic.height, pic.width);
    });
    let md = md
        + &table(
            "Where segrs' forward pass spends its time (one profiled run; preprocessing and post-processing not included):",
            &ops,
            1,
        );
    print!("{md}");
    write_section("mask2former", &md);
    std::fs::remove_dir_all(&dir).ok();
}
