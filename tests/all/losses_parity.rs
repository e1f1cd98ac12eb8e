//! Losses against PyTorch (tools/gen_unet_fixtures.py): values within 1e-5, and the gradient of
//! CE + 0.5 Dice with respect to the logits within 1e-5 relative L2 error.

use crate::common::{read_fixture, rel_l2};
use burn::prelude::*;
use segrs::losses::LossConfig;
use segrs::models::tensor_io::{from_host, to_vec};

const TOL: f64 = 1e-5;

fn setup() -> (segrs::weights::NamedTensors, Vec<u32>, [usize; 4]) {
    let f = read_fixture("losses.safetensors");
    let shape: [usize; 4] = f.get("logits").unwrap().shape.clone().try_into().unwrap();
    let labels: Vec<u32> = f
        .get("target")
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    (f, labels, shape)
}

fn value(
    spec: &str,
    weights: Option<&[f32]>,
    tweak: impl Fn(&mut LossConfig),
) -> (f64, segrs::weights::NamedTensors) {
    let (f, labels, [n, c, h, w]) = setup();
    let dev = Device::flex();
    let mut cfg = LossConfig::parse(spec, weights, c, Some(255)).unwrap();
    tweak(&mut cfg);
    let t = cfg.targets(&labels, n, h, w, &dev);
    let (loss, _) = cfg.forward(from_host::<4>(f.get("logits").unwrap(), &dev), &t);
    (loss.into_scalar::<f32>() as f64, f)
}

fn expect(f: &segrs::weights::NamedTensors, key: &str) -> f64 {
    f.get(key).unwrap().data[0] as f64
}

#[test]
fn cross_entropy_matches() {
    let (v, f) = value("ce", None, |_| {});
    assert!(
        (v - expect(&f, "ce")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "ce")
    );
}

#[test]
fn weighted_cross_entropy_matches() {
    let (f, ..) = setup();
    let w = f.get("weights").unwrap().data.clone();
    let (v, f) = value("ce", None, |c| c.class_weights = Some(w.clone()));
    assert!(
        (v - expect(&f, "ce_weighted")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "ce_weighted")
    );
}

#[test]
fn dice_matches() {
    let (v, f) = value("dice", None, |_| {});
    assert!(
        (v - expect(&f, "dice")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "dice")
    );
}

#[test]
fn focal_matches() {
    let (v, f) = value("focal", None, |_| {});
    assert!(
        (v - expect(&f, "focal")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "focal")
    );
    let (f, ..) = setup();
    let alpha = f.get("alpha").unwrap().data.clone();
    let (v, f) = value("focal", None, |c| {
        c.focal_gamma = 0.5;
        c.focal_alpha = Some(alpha.clone());
    });
    assert!(
        (v - expect(&f, "focal_gamma05_alpha")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "focal_gamma05_alpha")
    );
}

#[test]
fn combination_and_its_gradient_match() {
    let (v, f) = value("ce+dice", Some(&[1.0, 0.5]), |_| {});
    assert!(
        (v - expect(&f, "ce_plus_dice")).abs() < TOL,
        "{v} vs {}",
        expect(&f, "ce_plus_dice")
    );
    let (f, labels, [n, c, h, w]) = setup();
    let dev = Device::flex().autodiff();
    let cfg = LossConfig::parse("ce+dice", Some(&[1.0, 0.5]), c, Some(255)).unwrap();
    let t = cfg.targets(&labels, n, h, w, &dev);
    let logits = from_host::<4>(f.get("logits").unwrap(), &dev).require_grad();
    let (loss, _) = cfg.forward(logits.clone(), &t);
    let grads = loss.backward();
    let g = to_vec(logits.grad(&grads).unwrap());
    let err = rel_l2(&g, &f.get("grad_ce_plus_half_dice").unwrap().data);
    assert!(err < TOL, "gradient relative L2 error {err:e}");
}

#[test]
fn loss_spec_errors() {
    assert!(LossConfig::parse("ce+lovasz", None, 3, None).is_err());
    assert!(LossConfig::parse("ce+dice", Some(&[1.0]), 3, None).is_err());
}

#[test]
fn border_weight_maps_match_the_papers_formula() {
    use segrs::losses::border_weights::border_weight_map;
    let f = crate::common::read_fixture("losses_border_weights.safetensors");
    for k in [25, 27] {
        let labels: Vec<u32> = f
            .get(&format!("labels_{k}"))
            .unwrap()
            .data
            .iter()
            .map(|&v| v as u32)
            .collect();
        let want = &f.get(&format!("weights_{k}")).unwrap().data;
        let got = border_weight_map(&labels, 160, 160, 2, None, 10.0, 5.0);
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "image {k}: worst relative difference {worst}");
        // The separation term does show: some background pixels weigh far above w_c.
        assert!(want.iter().cloned().fold(0.0f32, f32::max) > 5.0);
    }
}

#[test]
fn pixel_weights_weigh_cross_entropy_and_focal_terms() {
    // sum(w * -log p_t) / sum(w) over the valid pixels, computed here from the logits.
    let (f, labels, [n, c, h, w]) = setup();
    let dev = Device::flex();
    let logits = f.get("logits").unwrap();
    let pw: Vec<f32> = (0..n * h * w).map(|i| 0.5 + (i % 7) as f32).collect();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for b in 0..n {
        for p in 0..h * w {
            let k = b * h * w + p;
            let l = labels[k];
            if l == 255 || l as usize >= c {
                continue;
            }
            let z: Vec<f64> = (0..c)
                .map(|ch| logits.data[(b * c + ch) * h * w + p] as f64)
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            num += pw[k] as f64 * (lse - z[l as usize]);
            den += pw[k] as f64;
        }
    }
    let cfg = LossConfig::parse("ce", None, c, Some(255)).unwrap();
    let t = cfg.targets_weighted(&labels, &pw, n, h, w, &dev);
    let (v, _) = cfg.forward(from_host::<4>(logits, &dev), &t);
    let want = num / den;
    assert!(
        ((v.into_scalar::<f32>() as f64) - want).abs() < 1e-4 * want.max(1.0),
        "weighted CE vs {want}"
    );
    // Focal with gamma 0 and the weights is the weighted sum over the valid-pixel count.
    let mut cfg = LossConfig::parse("focal", None, c, Some(255)).unwrap();
    cfg.focal_gamma = 0.0;
    let t = cfg.targets_weighted(&labels, &pw, n, h, w, &dev);
    let (v, _) = cfg.forward(from_host::<4>(logits, &dev), &t);
    let valid = labels
        .iter()
        .filter(|&&l| l != 255 && (l as usize) < c)
        .count() as f64;
    assert!(((v.into_scalar::<f32>() as f64) - num / valid).abs() < 1e-4 * (num / valid).max(1.0));
}
