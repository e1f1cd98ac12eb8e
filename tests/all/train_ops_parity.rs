//! The training operations (`segrs::autodiff`, on `segrs::ops`) on burn's autodiff CPU device:
//! forward outputs and the gradients of `L = sum(y * r)` against PyTorch's autograd (fixtures
//! from tools/gen_train_ops_fixtures.py) and against burn's generic operations on the same
//! inputs. Tolerance: 1e-4 relative L2 error. Odd sizes and batches above one throughout.

use crate::common::{read_fixture, rel_l2};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::module::{conv_transpose2d, conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};
use segrs::autodiff;
use segrs::models::tensor_io::to_vec;
use segrs::weights::{HostTensor, NamedTensors};

const TOL: f64 = 1e-4;

fn fx() -> NamedTensors {
    read_fixture("ops/train_ops.safetensors")
}

fn ad() -> Device {
    Device::flex().autodiff()
}

fn get<'a>(f: &'a NamedTensors, k: &str) -> &'a HostTensor {
    f.get(k).unwrap_or_else(|| panic!("fixture key {k}"))
}

/// A leaf tensor (tracked when `grad`) from a fixture entry.
fn leaf<const D: usize>(f: &NamedTensors, k: &str, grad: bool) -> Tensor<D> {
    let h = get(f, k);
    let t = Tensor::<D>::from_data(TensorData::new(h.data.clone(), h.shape.clone()), &ad());
    if grad { t.require_grad() } else { t }
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    let e = rel_l2(got, want);
    assert!(e < TOL, "{what}: relative L2 error {e:e}");
}

/// Runs `op` on fresh leaves of `keys` (all tracked), then backward of sum(y * r): the output
/// and each leaf's gradient.
fn run<const D: usize>(
    f: &NamedTensors,
    prefix: &str,
    keys: &[&str],
    op: impl Fn(Vec<Tensor<4>>, Vec<Tensor<1>>) -> Tensor<D>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut quads = Vec::new();
    let mut vecs = Vec::new();
    for k in keys {
        let key = format!("{prefix}.{k}");
        match get(f, &key).shape.len() {
            4 => quads.push(leaf::<4>(f, &key, true)),
            _ => vecs.push(leaf::<1>(f, &key, true)),
        }
    }
    let y = op(quads.clone(), vecs.clone());
    let r = leaf::<D>(f, &format!("{prefix}.r"), false);
    let grads = (y.clone() * r).sum().backward();
    let mut out: Vec<Vec<f32>> = quads
        .iter()
        .map(|t| to_vec(t.grad(&grads).expect("gradient")))
        .collect();
    out.extend(
        vecs.iter()
            .map(|t| to_vec(t.grad(&grads).expect("gradient"))),
    );
    (to_vec(y), out)
}

#[test]
fn convolutions_and_their_gradients_match_pytorch_and_burn() {
    let f = fx();
    for name in ["conv3x3_odd", "conv3x3_even", "conv3x3_wide", "conv1x1"] {
        let k = get(&f, &format!("{name}.w")).shape[2];
        let engine = run::<4>(&f, name, &["x", "w", "b"], |q, v| {
            autodiff::conv2d(q[0].clone(), q[1].clone(), v[0].clone(), k / 2)
        });
        let generic = run::<4>(&f, name, &["x", "w", "b"], |q, v| {
            let opts = ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1);
            conv2d(q[0].clone(), q[1].clone(), Some(v[0].clone()), opts)
        });
        close(
            &format!("{name} y"),
            &engine.0,
            &get(&f, &format!("{name}.y")).data,
        );
        close(&format!("{name} y vs burn"), &engine.0, &generic.0);
        for (i, g) in ["dx", "dw", "db"].iter().enumerate() {
            let want = &get(&f, &format!("{name}.{g}")).data;
            close(&format!("{name} {g}"), &engine.1[i], want);
            close(&format!("{name} {g} vs burn"), &engine.1[i], &generic.1[i]);
        }
    }
}

/// On a 64x64 map the training convolution runs Winograd F(4x4, 3x3) forward, for the input
/// gradient and for the weight gradient: all three against burn's generic convolution.
#[test]
fn winograd_training_convolution_matches_burn() {
    use crate::common::uniform;
    let device = ad();
    let (n, c, h, w) = (2, 8, 64, 64);
    let leaf = |seed: u64, shape: Vec<usize>, scale: f32| {
        let len = shape.iter().product();
        let v: Vec<f32> = uniform(seed, len).iter().map(|x| x * scale).collect();
        TensorData::new(v, shape)
    };
    let (xd, wd, bd) = (
        leaf(1, vec![n, c, h, w], 1.0),
        leaf(2, vec![c, c, 3, 3], 0.3),
        leaf(3, vec![c], 1.0),
    );
    let r = Tensor::<4>::from_data(leaf(4, vec![n, c, h, w], 1.0), &device);
    let grads_of = |engine: bool| {
        let x = Tensor::<4>::from_data(xd.clone(), &device).require_grad();
        let wt = Tensor::<4>::from_data(wd.clone(), &device).require_grad();
        let b = Tensor::<1>::from_data(bd.clone(), &device).require_grad();
        let y = if engine {
            autodiff::conv2d(x.clone(), wt.clone(), b.clone(), 1)
        } else {
            let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            conv2d(x.clone(), wt.clone(), Some(b.clone()), opts)
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        [
            to_vec(y),
            to_vec(x.grad(&grads).unwrap()),
            to_vec(wt.grad(&grads).unwrap()),
            to_vec(b.grad(&grads).unwrap()),
        ]
    };
    let (engine, generic) = (grads_of(true), grads_of(false));
    for (i, what) in ["y", "dx", "dw", "db"].iter().enumerate() {
        close(&format!("64x64 {what} vs burn"), &engine[i], &generic[i]);
    }
}

#[test]
fn batch_norm_relu_matches_pytorch_and_burn() {
    let f = fx();
    let keys = ["x", "gamma", "beta"];
    let engine = run::<4>(&f, "bn_relu", &keys, |q, v| {
        autodiff::batch_norm_train(q[0].clone(), v[0].clone(), v[1].clone(), 1e-5, true).0
    });
    let generic = run::<4>(&f, "bn_relu", &keys, |q, v| {
        let out =
            burn::tensor::module::batch_norm_train(q[0].clone(), v[0].clone(), v[1].clone(), 1e-5);
        burn::tensor::activation::relu(out.output)
    });
    close("bn_relu y", &engine.0, &get(&f, "bn_relu.y").data);
    close("bn_relu y vs burn", &engine.0, &generic.0);
    for (i, g) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
        close(
            &format!("bn_relu {g}"),
            &engine.1[i],
            &get(&f, &format!("bn_relu.{g}")).data,
        );
        close(&format!("bn_relu {g} vs burn"), &engine.1[i], &generic.1[i]);
    }
    // the statistics the running averages are updated with
    let x = leaf::<4>(&f, "bn_relu.x", false);
    let (g, b) = (
        leaf::<1>(&f, "bn_relu.gamma", false),
        leaf::<1>(&f, "bn_relu.beta", false),
    );
    let (_, stats) = autodiff::batch_norm_train(x, g, b, 1e-5, true);
    close("bn_relu mean", &stats.mean, &get(&f, "bn_relu.mean").data);
    close("bn_relu var", &stats.var, &get(&f, "bn_relu.var").data);
}

#[test]
fn max_pooling_and_up_convolution_match_pytorch_and_burn() {
    let f = fx();
    let engine = run::<4>(&f, "max_pool", &["x"], |q, _| {
        autodiff::max_pool2x2(q[0].clone())
    });
    let generic = run::<4>(&f, "max_pool", &["x"], |q, _| {
        max_pool2d(
            q[0].clone(),
            MaxPoolOptions {
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [(0, 0), (0, 0)],
                dilation: [1, 1],
                ceil_mode: false,
            },
        )
    });
    close("max_pool y", &engine.0, &get(&f, "max_pool.y").data);
    close("max_pool y vs burn", &engine.0, &generic.0);
    close("max_pool dx", &engine.1[0], &get(&f, "max_pool.dx").data);
    close("max_pool dx vs burn", &engine.1[0], &generic.1[0]);

    let keys = ["x", "w", "b"];
    let engine = run::<4>(&f, "up_conv", &keys, |q, v| {
        autodiff::conv_transpose2x2(q[0].clone(), q[1].clone(), v[0].clone())
    });
    let generic = run::<4>(&f, "up_conv", &keys, |q, v| {
        let opts = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
        conv_transpose2d(q[0].clone(), q[1].clone(), Some(v[0].clone()), opts)
    });
    close("up_conv y", &engine.0, &get(&f, "up_conv.y").data);
    close("up_conv y vs burn", &engine.0, &generic.0);
    for (i, g) in ["dx", "dw", "db"].iter().enumerate() {
        close(
            &format!("up_conv {g}"),
            &engine.1[i],
            &get(&f, &format!("up_conv.{g}")).data,
        );
        close(&format!("up_conv {g} vs burn"), &engine.1[i], &generic.1[i]);
    }
}

/// A short U-Net training run (cross-entropy + Dice, AdamW) from the same initial weights on the
/// same batches: the engine's operations follow burn's generic operations' loss curve to 1e-3
/// over 20 steps, and the running statistics end up the same (1e-3 relative L2: 20 AdamW steps,
/// which rescale every gradient, carry the two paths' rounding differences into the weights).
/// With BatchNorm and transposed up-convolutions, and without BatchNorm with bilinear
/// up-sampling. The initial weights are seeded, so that a run does not depend on anything
/// else drawing from the device's generator.
#[test]
fn unet_training_follows_the_generic_loss_curve() {
    use segrs::models::unet::{UNetConfig, Upsampling};
    for (batch_norm, upsampling) in [(true, Upsampling::Transpose), (false, Upsampling::Bilinear)] {
        loss_curves_agree(UNetConfig {
            base_width: 8,
            depth: 2,
            upsampling,
            batch_norm,
            ..UNetConfig::classic(3, 4)
        });
    }
}

fn loss_curves_agree(cfg: segrs::models::unet::UNetConfig) {
    use burn::optim::{AdamWConfig, GradientsParams};
    use segrs::losses::LossConfig;
    use segrs::models::unet::TrainOps;
    use segrs::models::unet::state_dict::{import, seeded_init};
    let device = ad();
    let init = seeded_init(&cfg, 7);
    let loss_cfg = LossConfig::parse("ce+dice", None, 4, None).unwrap();
    let (n, h, w) = (2, 24, 20);
    let curve = |ops: TrainOps| {
        // a fresh model from the same weights: clones would share their running statistics
        let mut model = import(&cfg, &init, &device).unwrap().with_train_ops(ops);
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
        let mut losses = Vec::new();
        for step in 0..20u64 {
            let x = crate::common::uniform(step, n * 3 * h * w);
            let labels: Vec<u32> = crate::common::uniform(100 + step, n * h * w)
                .iter()
                .zip(&x)
                .map(|(u, v)| (((v + 1.0) * 1.5 + u * 0.3).clamp(0.0, 3.9)) as u32)
                .collect();
            let xt = Tensor::<4>::from_data(TensorData::new(x, [n, 3, h, w]), &device);
            let t = loss_cfg.targets(&labels, n, h, w, &device);
            let logits = model.forward(xt);
            let loss = match ops {
                // the fused softmax + cross-entropy + Dice operation
                TrainOps::Engine => loss_cfg.forward(logits, &t).0,
                // burn's generic operations
                TrainOps::Generic => {
                    segrs::losses::cross_entropy(logits.clone(), &t)
                        + segrs::losses::dice_loss(logits, &t, 1.0)
                }
            };
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        let stats = model.enc[1]
            .bn2
            .as_ref()
            .map_or(Vec::new(), |bn| to_vec(bn.running_var.value()));
        (losses, stats)
    };
    let (engine, engine_var) = curve(TrainOps::Engine);
    let (generic, generic_var) = curve(TrainOps::Generic);
    assert!(
        engine[19] < engine[0],
        "the loss falls ({cfg:?}): {engine:?}"
    );
    for (step, (a, b)) in engine.iter().zip(&generic).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * b.abs().max(1.0),
            "step {step} ({cfg:?}): engine {a} vs generic {b}\n{engine:?}\n{generic:?}"
        );
    }
    let e = rel_l2(&engine_var, &generic_var);
    assert!(
        e < 1e-3,
        "running variance ({cfg:?}): relative L2 error {e:e}"
    );
}

/// Cross-entropy (class weights, an ignored label) + 0.5 Dice as the fused operation: both
/// values and the logits' gradient against PyTorch and against the generic losses.
#[test]
fn fused_cross_entropy_and_dice_match_pytorch_and_the_generic_losses() {
    use segrs::losses::{LossConfig, cross_entropy, dice_loss};
    let f = fx();
    let labels: Vec<u32> = get(&f, "ce_dice.labels")
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    let d = get(&f, "ce_dice.logits").shape.clone();
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let mut cfg = LossConfig::parse("ce+dice", Some(&[1.0, 0.5]), c, Some(255)).unwrap();
    cfg.class_weights = Some(get(&f, "ce_dice.class_weights").data.clone());
    let device = ad();
    let t = cfg.targets(&labels, n, h, w, &device);
    // fused: LossConfig on the autodiff CPU device
    let z = leaf::<4>(&f, "ce_dice.logits", true);
    let (loss, parts) = cfg.forward(z.clone(), &t);
    let grads = loss.backward();
    let fused_grad = to_vec(z.grad(&grads).unwrap());
    let (ce, dice) = (to_vec(parts[0].clone()), to_vec(parts[1].clone()));
    close("ce", &ce, &get(&f, "ce_dice.ce").data);
    close("dice", &dice, &get(&f, "ce_dice.dice").data);
    close("dlogits", &fused_grad, &get(&f, "ce_dice.dlogits").data);
    // generic: the term functions themselves
    let z = leaf::<4>(&f, "ce_dice.logits", true);
    let generic = cross_entropy(z.clone(), &t) + dice_loss(z.clone(), &t, 1.0) * 0.5;
    close("loss vs generic", &to_vec(loss), &to_vec(generic.clone()));
    let grads = generic.backward();
    close(
        "dlogits vs generic",
        &fused_grad,
        &to_vec(z.grad(&grads).unwrap()),
    );
}
