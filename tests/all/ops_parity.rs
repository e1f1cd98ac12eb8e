//! The host engine's kernels (`segrs::ops`), each against the PyTorch / torchvision / SAM 2
//! function it reproduces (fixtures from tools/gen_ops_fixtures.py). Tolerance: 1e-5 relative
//! L2 error (Winograd and the fast exp/erf stay well inside it); indices exactly.

use crate::common::{read_fixture, rel_l2};
use segrs::ops::attention::{HeadView, Hooks, attention};
use segrs::ops::boxes::{batched_nms, box_iou, nms};
use segrs::ops::conv::ConvKernel;
use segrs::ops::conv_transpose::ConvTranspose2x2;
use segrs::ops::layout::transpose;
use segrs::ops::norm::{BatchNormParams, fold_batchnorm, layer_norm, layer_norm2d};
use segrs::ops::pool::max_pool2d;
use segrs::ops::resize::{bicubic, bilinear, bilinear_antialias, nearest};
use segrs::ops::roi_align::RoiAlign;
use segrs::ops::rope::AxialRope;
use segrs::ops::softmax::softmax_rows;
use segrs::ops::{Activation, Precision};
use segrs::weights::{HostTensor, NamedTensors};

const TOL: f64 = 1e-5;

fn fx() -> NamedTensors {
    read_fixture("ops/ops.safetensors")
}

fn t<'a>(f: &'a NamedTensors, k: &str) -> &'a HostTensor {
    f.get(k).unwrap_or_else(|| panic!("fixture key {k}"))
}

fn close(name: &str, got: &[f32], want: &HostTensor) {
    assert_eq!(got.len(), want.data.len(), "{name}: size");
    let e = rel_l2(got, &want.data);
    assert!(e < TOL, "{name}: relative L2 error {e:e}");
}

#[test]
fn convolutions_match_f_conv2d() {
    let f = fx();
    for (name, k, stride, pad, groups) in [
        ("conv3x3_even", 3, 1, 1, 1),
        ("conv3x3_odd", 3, 1, 1, 1),
        ("conv3x3_wide", 3, 1, 1, 1),
        ("conv3x3_wide_even", 3, 1, 1, 1),
        ("conv3x3_s2", 3, 2, 1, 1),
        ("conv7x7_s2", 7, 2, 3, 1),
        ("conv1x1", 1, 1, 0, 1),
        ("conv1x1_s2", 1, 2, 0, 1),
        ("conv2x2_s2", 2, 2, 0, 1),
        ("conv_dw3x3", 3, 1, 1, 6),
        ("conv_dw3x3_s2", 3, 2, 1, 6),
    ] {
        let x = t(&f, &format!("{name}.x"));
        let w = t(&f, &format!("{name}.w"));
        let (cin, h, wd, cout) = (x.shape[0], x.shape[1], x.shape[2], w.shape[0]);
        let b = t(&f, &format!("{name}.b")).data.clone();
        let conv = ConvKernel::new(w.data.clone(), Some(b), cin, cout, k, stride, pad, groups);
        let want = t(&f, &format!("{name}.y"));
        let (y, ho, wo) = conv.forward(&x.data, h, wd, Activation::None);
        assert_eq!([cout, ho, wo], want.shape[..], "{name}: output shape");
        close(name, &y, want);
        let (y, _, _) = conv.forward(&x.data, h, wd, Activation::Relu);
        close(
            &format!("{name} + relu"),
            &y,
            t(&f, &format!("{name}.y_relu")),
        );
        // bf16 (Winograd's products, unfolded tiles or 1x1 in bf16):
        // within bf16's rounding of PyTorch's f32
        let bf16 = conv.clone().with_precision(Precision::Bf16);
        let (y, _, _) = bf16.forward(&x.data, h, wd, Activation::Relu);
        let e = rel_l2(&y, &t(&f, &format!("{name}.y_relu")).data);
        assert!(e < 5e-3, "{name} in bf16: relative L2 error {e:e}");
        // (depthwise kernels and those of fewer than 32 multiply-adds per output stay f32)
        let in_bf16 = groups == 1 && cin * k * k >= 32;
        assert_eq!(e > 1e-6, in_bf16, "{name} in bf16: relative L2 error {e:e}");
        if groups > 1 && stride == 1 {
            // The same kernel on channels-last rows: the same floats, transposed.
            let rows = transpose(&x.data, cin, h * wd);
            let got = conv.depthwise_rows(&rows, h, wd, Activation::Relu);
            let (y, _, _) = conv.forward(&x.data, h, wd, Activation::Relu);
            assert_eq!(transpose(&got, h * wd, cout), y, "{name}: channels last");
        }
    }
}

#[test]
fn batchnorm_folds_into_the_convolution() {
    let f = fx();
    let x = t(&f, "convbn.x");
    let mut w = t(&f, "convbn.w").data.clone();
    let mut b = vec![0.0; 5];
    let g = |k: &str| t(&f, &format!("convbn.bn.{k}")).data.clone();
    let (gamma, beta, mean, var) = (g("weight"), g("bias"), g("running_mean"), g("running_var"));
    fold_batchnorm(
        &mut w,
        &mut b,
        &BatchNormParams {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            var: &var,
            eps: 1e-5,
        },
    );
    let conv = ConvKernel::new(w, Some(b), 4, 5, 3, 1, 1, 1);
    let (y, _, _) = conv.forward(&x.data, 6, 6, Activation::None);
    close("conv + bn", &y, t(&f, "convbn.y"));
}

#[test]
fn transposed_convolution_matches() {
    let f = fx();
    let x = t(&f, "convt.x");
    let op = ConvTranspose2x2::new(
        &t(&f, "convt.w").data,
        Some(t(&f, "convt.b").data.clone()),
        6,
        3,
    );
    close(
        "convt",
        &op.forward(&x.data, 4, 5, Activation::None),
        t(&f, "convt.y"),
    );
    let rows = segrs::ops::layout::transpose(&x.data, 6, 20);
    close(
        "convt rows",
        &op.forward_rows(&rows, 4, 5, Activation::None),
        t(&f, "convt.y"),
    );
}

#[test]
fn max_pooling_matches() {
    let f = fx();
    for (name, k, s, p) in [
        ("pool2", 2, 2, 0),
        ("pool3s2", 3, 2, 1),
        ("pool1s2", 1, 2, 0),
    ] {
        let x = t(&f, &format!("{name}.x"));
        let want = t(&f, &format!("{name}.y"));
        let (y, ho, wo) = max_pool2d(&x.data, 3, x.shape[1], x.shape[2], k, s, p);
        assert_eq!([3, ho, wo], want.shape[..], "{name}");
        assert_eq!(y, want.data, "{name}");
    }
}

#[test]
fn resizing_matches_f_interpolate() {
    let f = fx();
    let x = t(&f, "resize.x");
    let hw = (7, 9);
    let cases: [(&str, Vec<f32>); 5] = [
        ("bilinear_up", bilinear(&x.data, 3, hw, (12, 17), false)),
        ("bilinear_down", bilinear(&x.data, 3, hw, (4, 5), false)),
        ("bilinear_ac", bilinear(&x.data, 3, hw, (12, 5), true)),
        ("nearest_up", nearest(&x.data, 3, hw, (14, 18))),
        ("nearest_odd", nearest(&x.data, 3, hw, (10, 4))),
    ];
    for (name, got) in cases {
        close(name, &got, t(&f, &format!("resize.{name}")));
    }
    let a = t(&f, "resize.aa_x");
    close(
        "antialias",
        &bilinear_antialias(&a.data, 2, (23, 31), (7, 10)),
        t(&f, "resize.aa_down"),
    );
    let p = t(&f, "bicubic.x");
    close(
        "bicubic up",
        &bicubic(&p.data, 4, (7, 7), (32, 24)),
        t(&f, "bicubic.up"),
    );
    close(
        "bicubic down",
        &bicubic(&p.data, 4, (7, 7), (5, 3)),
        t(&f, "bicubic.down"),
    );
}

#[test]
fn activations_softmax_and_norms_match() {
    let f = fx();
    let x = &t(&f, "act.x").data;
    for (name, act) in [
        ("gelu", Activation::Gelu),
        ("gelu_tanh", Activation::GeluTanh),
        ("sigmoid", Activation::Sigmoid),
    ] {
        let mut y = x.clone();
        act.apply(&mut y);
        close(name, &y, t(&f, &format!("act.{name}")));
    }
    let mut y = x.clone();
    softmax_rows(&mut y, 16);
    close("softmax", &y, t(&f, "act.softmax"));
    let mut y = x.clone();
    layer_norm(&mut y, 16, &t(&f, "ln.w").data, &t(&f, "ln.b").data, 1e-5);
    close("layer_norm", &y, t(&f, "ln.y"));
    let mut y = t(&f, "ln2d.x").data.clone();
    layer_norm2d(
        &mut y,
        &t(&f, "ln2d.w").data,
        &t(&f, "ln2d.b").data,
        35,
        1e-6,
    );
    close("layer_norm2d", &y, t(&f, "ln2d.y"));
}

#[test]
fn attention_and_rotary_embeddings_match() {
    let f = fx();
    let (q, k, v) = (t(&f, "attn.q"), t(&f, "attn.k"), t(&f, "attn.v"));
    let (heads, d) = (3, 8);
    let y = attention(
        HeadView::packed(&q.data, 10, d),
        HeadView::packed(&k.data, 13, d),
        HeadView::packed(&v.data, 13, d),
        heads,
        d,
        1.0 / (d as f32).sqrt(),
        Hooks::default(),
    );
    close("attention", &y, t(&f, "attn.y"));
    // 700 queries x 600 keys: the blocked path
    let (q, k, v) = (
        t(&f, "attn_large.q"),
        t(&f, "attn_large.k"),
        t(&f, "attn_large.v"),
    );
    let y = attention(
        HeadView::packed(&q.data, 700, 16),
        HeadView::packed(&k.data, 600, 16),
        HeadView::packed(&v.data, 600, 16),
        2,
        16,
        0.25,
        Hooks::default(),
    );
    close("attention over many positions", &y, t(&f, "attn_large.y"));

    let rope = AxialRope::new(16, 4, 3, 10000.0);
    let mut rq = t(&f, "rope.q").data.clone();
    let mut rk = t(&f, "rope.k").data.clone();
    rope.apply(&mut rq, 12);
    rope.apply(&mut rk, 24);
    close("rope q", &rq, t(&f, "rope.q_out"));
    close("rope k (repeated grid)", &rk, t(&f, "rope.k_out"));
}

fn boxes(h: &HostTensor) -> Vec<[f32; 4]> {
    h.data.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

fn indices(h: &HostTensor) -> Vec<usize> {
    h.data.iter().map(|&v| v as usize).collect()
}

#[test]
fn box_ops_match_torchvision() {
    let f = fx();
    let b = boxes(t(&f, "boxes.boxes"));
    let s = &t(&f, "boxes.scores").data;
    let idxs: Vec<i64> = t(&f, "boxes.idxs").data.iter().map(|&v| v as i64).collect();
    close("box_iou", &box_iou(&b[..7], &b[7..12]), t(&f, "boxes.iou"));
    assert_eq!(nms(&b, s, 0.5), indices(t(&f, "boxes.nms")));
    assert_eq!(
        batched_nms(&b, s, &idxs, 0.5),
        indices(t(&f, "boxes.batched_nms"))
    );
}

#[test]
fn roi_align_matches_torchvision() {
    let f = fx();
    let x = t(&f, "roi.x");
    let b = boxes(t(&f, "roi.boxes"));
    for (name, (oh, ow), sampling, aligned) in [
        ("y_s2", (7, 7), 2, false),
        ("y_adaptive", (5, 4), -1, false),
        ("y_aligned", (6, 6), 2, true),
    ] {
        let op = RoiAlign {
            out_h: oh,
            out_w: ow,
            spatial_scale: 0.25,
            sampling_ratio: sampling,
            aligned,
        };
        close(
            name,
            &op.forward(&x.data, 3, 12, 14, &b),
            t(&f, &format!("roi.{name}")),
        );
    }
}

#[test]
fn box_coding_matches_torchvision() {
    let f = fx();
    let reference = boxes(t(&f, "coder.reference"));
    let deltas = &t(&f, "coder.deltas").data;
    let coder = segrs::ops::boxes::BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    let got: Vec<f32> = reference
        .iter()
        .enumerate()
        .flat_map(|(i, r)| coder.decode(&deltas[i * 4..i * 4 + 4], r))
        .collect();
    close("box decode", &got, t(&f, "coder.boxes"));
}

#[test]
fn mask_paste_matches_torchvision() {
    let f = fx();
    let m = t(&f, "paste.masks");
    let masks: Vec<Vec<f32>> = m.data.chunks(28 * 28).map(|c| c.to_vec()).collect();
    let b = boxes(t(&f, "paste.boxes"));
    let got: Vec<f32> =
        segrs::models::mask_rcnn::mask_head::paste_masks(&masks, 28, &b, (37, 45)).concat();
    close("paste", &got, t(&f, "paste.out"));
}
