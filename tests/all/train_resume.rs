//! Training: deterministic on the CPU, a killed run resumes to the same weights, the loss falls,
//! and a diverging run stops with a clear error.

use burn::prelude::*;
use segrs::data::synthetic::dataset;
use segrs::train::demo_config;
use segrs::train::{RunOptions, TrainConfig, train};
use segrs::weights::NamedTensors;

fn tiny_config(epochs: usize) -> TrainConfig {
    let mut cfg = demo_config(epochs, 3);
    cfg.unet.base_width = 4;
    cfg.unet.depth = 2;
    cfg.batch_size = 4;
    cfg.warmup_steps = 2;
    // Every augmentation on, so that resuming and determinism cover them too.
    cfg.geometry = segrs::data::augment::Geometry {
        rotate: 20.0,
        scale: 0.1,
        elastic: Some(segrs::data::augment::Elastic::PAPER),
    };
    cfg.intensity = segrs::data::augment::Intensity {
        brightness: 0.1,
        contrast: 0.1,
        gamma: 0.2,
    };
    cfg
}

fn weights(path: &std::path::Path) -> NamedTensors {
    NamedTensors::read(path).unwrap()
}

#[test]
fn resume_after_a_kill_gives_the_same_weights() {
    let train_set = dataset(1, 0, 12, 32);
    let val_set = dataset(1, 12, 4, 32);
    let dev = Device::flex();
    let quiet = RunOptions {
        stop_after: None,
        quiet: true,
    };
    let a = crate::common::tmp("run-a");
    let out_a = train(
        &tiny_config(3),
        &train_set,
        &val_set,
        &a,
        false,
        &dev,
        &quiet,
    )
    .unwrap();
    assert_eq!(out_a.state.epochs_done, 3);
    assert_eq!(out_a.state.history.len(), 3);
    // The loss falls.
    let h = &out_a.state.history;
    assert!(
        h[2].train_loss < h[0].train_loss,
        "{:?}",
        h.iter().map(|r| r.train_loss).collect::<Vec<_>>()
    );

    // Run B: killed after one epoch (stop_after), then resumed.
    let b = crate::common::tmp("run-b");
    let stop = RunOptions {
        stop_after: Some(1),
        quiet: true,
    };
    let out_b1 = train(
        &tiny_config(3),
        &train_set,
        &val_set,
        &b,
        false,
        &dev,
        &stop,
    )
    .unwrap();
    assert_eq!(out_b1.state.epochs_done, 1);
    // A second start without --resume refuses to overwrite the run.
    assert!(
        train(
            &tiny_config(3),
            &train_set,
            &val_set,
            &b,
            false,
            &dev,
            &quiet
        )
        .is_err()
    );
    let out_b = train(
        &tiny_config(3),
        &train_set,
        &val_set,
        &b,
        true,
        &dev,
        &quiet,
    )
    .unwrap();
    assert_eq!(out_b.state.epochs_done, 3);
    // The resumed network computes the same function. (Weights are compared through the
    // outputs: a conv bias followed by BatchNorm has a zero gradient up to rounding, which Adam
    // normalises into lr-sized steps, so its raw value depends on float noise while the output
    // does not; tests running in parallel share rayon's pool, whose splits vary.)
    let ma = segrs::models::unet::checkpoint::load(&a.join("last.safetensors"), (None, None), &dev)
        .unwrap()
        .model;
    let mb = segrs::models::unet::checkpoint::load(&b.join("last.safetensors"), (None, None), &dev)
        .unwrap()
        .model;
    let wa = weights(&a.join("last.safetensors"));
    let wb = weights(&b.join("last.safetensors"));
    assert_eq!(
        wa.tensors.keys().collect::<Vec<_>>(),
        wb.tensors.keys().collect::<Vec<_>>()
    );
    for s in &val_set {
        let x = segrs::models::tensor_io::tensor4(
            s.image.with_channels(3).data.clone(),
            [1, 32, 32, 3],
            &dev,
        )
        .permute([0, 3, 1, 2]);
        let ya = segrs::models::tensor_io::to_vec(ma.valid().forward(x.clone()));
        let yb = segrs::models::tensor_io::to_vec(mb.valid().forward(x));
        let err = crate::common::rel_l2(&yb, &ya);
        assert!(
            err < 1e-3,
            "resumed network output differs: relative L2 {err:e}"
        );
    }
    for (ra, rb) in out_a.state.history.iter().zip(&out_b.state.history) {
        assert!(
            (ra.train_loss - rb.train_loss).abs() < 1e-4,
            "epoch {}: {} vs {}",
            ra.epoch,
            ra.train_loss,
            rb.train_loss
        );
    }
    // Only the newest exact-state checkpoint is kept; metrics and curve are there.
    let cks: Vec<_> = std::fs::read_dir(b.join("checkpoints")).unwrap().collect();
    assert_eq!(cks.len(), 1);
    let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    assert!(b.join("curve.png").exists() && b.join("best.safetensors").exists());
}

#[test]
fn diverging_training_stops_with_a_clear_error() {
    let train_set = dataset(2, 0, 8, 32);
    let dev = Device::flex();
    let mut cfg = tiny_config(3);
    cfg.lr = 1e30;
    cfg.min_lr = 1e30;
    cfg.warmup_steps = 0;
    cfg.schedule = segrs::train::Schedule::Constant;
    let dir = crate::common::tmp("nan");
    let err = train(
        &cfg,
        &train_set,
        &[],
        &dir,
        false,
        &dev,
        &RunOptions {
            stop_after: None,
            quiet: true,
        },
    );
    let msg = format!("{:#}", err.err().expect("training with lr 1e30 must fail"));
    assert!(msg.contains("loss became"), "{msg}");
}
