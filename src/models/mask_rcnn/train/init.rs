//! Fresh weights for `maskrcnn_resnet50_fpn` (v1) under torchvision's key names, drawn as
//! torchvision initialises each module: ResNet and mask-head convolutions Kaiming-normal
//! (fan-out, ReLU gain), BatchNorm at identity statistics, FPN convolutions Kaiming-uniform
//! (`a=1`), the RPN head normal with std 0.01, fully connected layers PyTorch's default
//! (uniform, bound `1/sqrt(fan_in)`), every other bias zero. Seeded, so a run is repeatable.

use crate::weights::{HostTensor, NamedTensors};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

enum Draw {
    /// Normal with this standard deviation.
    Normal(f32),
    /// Uniform in `[-b, b)`.
    Uniform(f32),
    Const(f32),
}

struct Builder {
    rng: SmallRng,
    out: NamedTensors,
}

impl Builder {
    fn put(&mut self, key: String, shape: Vec<usize>, d: Draw) {
        let n = shape.iter().product();
        let data: Vec<f32> = match d {
            Draw::Const(v) => vec![v; n],
            Draw::Uniform(b) => (0..n).map(|_| self.rng.random_range(-b..b)).collect(),
            Draw::Normal(s) => (0..n)
                .map(|_| {
                    // Box-Muller.
                    let u1: f32 = self.rng.random_range(f32::EPSILON..1.0);
                    let u2: f32 = self.rng.random();
                    s * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect(),
        };
        self.out.insert(key, HostTensor::new(shape, data));
    }

    /// A bias-free convolution, Kaiming-normal with fan-out and ReLU gain.
    fn conv_kaiming_out(&mut self, p: &str, cin: usize, cout: usize, k: usize) {
        let std = (2.0 / (cout * k * k) as f32).sqrt();
        self.put(
            format!("{p}.weight"),
            vec![cout, cin, k, k],
            Draw::Normal(std),
        );
    }

    fn bn(&mut self, p: &str, c: usize) {
        self.put(format!("{p}.weight"), vec![c], Draw::Const(1.0));
        self.put(format!("{p}.bias"), vec![c], Draw::Const(0.0));
        self.put(format!("{p}.running_mean"), vec![c], Draw::Const(0.0));
        self.put(format!("{p}.running_var"), vec![c], Draw::Const(1.0));
    }

    fn zeros(&mut self, key: String, c: usize) {
        self.put(key, vec![c], Draw::Const(0.0));
    }

    fn linear(&mut self, p: &str, cin: usize, cout: usize) {
        let b = 1.0 / (cin as f32).sqrt();
        self.put(format!("{p}.weight"), vec![cout, cin], Draw::Uniform(b));
        self.put(format!("{p}.bias"), vec![cout], Draw::Uniform(b));
    }
}

/// Blocks per stage of ResNet-50.
const BLOCKS: [usize; 4] = [3, 4, 6, 3];

/// The body's keys alone (`backbone.body.*` without the prefix when `prefix` is empty).
fn body(b: &mut Builder, prefix: &str) {
    b.conv_kaiming_out(&format!("{prefix}conv1"), 3, 64, 7);
    b.bn(&format!("{prefix}bn1"), 64);
    let mut cin = 64;
    for (s, &n) in BLOCKS.iter().enumerate() {
        let planes = 64 << s;
        for i in 0..n {
            let p = format!("{prefix}layer{}.{i}", s + 1);
            b.conv_kaiming_out(&format!("{p}.conv1"), cin, planes, 1);
            b.bn(&format!("{p}.bn1"), planes);
            b.conv_kaiming_out(&format!("{p}.conv2"), planes, planes, 3);
            b.bn(&format!("{p}.bn2"), planes);
            b.conv_kaiming_out(&format!("{p}.conv3"), planes, planes * 4, 1);
            b.bn(&format!("{p}.bn3"), planes * 4);
            if i == 0 {
                b.conv_kaiming_out(&format!("{p}.downsample.0"), cin, planes * 4, 1);
                b.bn(&format!("{p}.downsample.1"), planes * 4);
            }
            cin = planes * 4;
        }
    }
}

/// A whole `maskrcnn_resnet50_fpn` for `num_classes` classes (background included).
pub fn seeded_init(num_classes: usize, seed: u64) -> NamedTensors {
    let mut b = Builder {
        rng: SmallRng::seed_from_u64(seed),
        out: NamedTensors {
            source: format!("fresh Mask R-CNN weights (seed {seed})"),
            ..Default::default()
        },
    };
    body(&mut b, "backbone.body.");
    heads(&mut b, num_classes);
    b.out
}

/// The FPN, RPN, box and mask heads (everything but the body).
fn heads(b: &mut Builder, num_classes: usize) {
    let ch = 256;
    for (i, cin) in [256, 512, 1024, 2048].into_iter().enumerate() {
        for (name, cin, k) in [("inner_blocks", cin, 1), ("layer_blocks", ch, 3)] {
            let p = format!("backbone.fpn.{name}.{i}.0");
            let bound = (3.0 / (cin * k * k) as f32).sqrt();
            b.put(
                format!("{p}.weight"),
                vec![ch, cin, k, k],
                Draw::Uniform(bound),
            );
            b.zeros(format!("{p}.bias"), ch);
        }
    }
    for (p, cout, k) in [
        ("rpn.head.conv.0.0", ch, 3),
        ("rpn.head.cls_logits", 3, 1),
        ("rpn.head.bbox_pred", 12, 1),
    ] {
        b.put(
            format!("{p}.weight"),
            vec![cout, ch, k, k],
            Draw::Normal(0.01),
        );
        b.zeros(format!("{p}.bias"), cout);
    }
    b.linear("roi_heads.box_head.fc6", ch * 49, 1024);
    b.linear("roi_heads.box_head.fc7", 1024, 1024);
    class_layers(b, num_classes);
    for i in 0..4 {
        let p = format!("roi_heads.mask_head.{i}.0");
        b.conv_kaiming_out(&p, ch, ch, 3);
        b.zeros(format!("{p}.bias"), ch);
    }
    // ConvTranspose2d's weights are `[in, out, 2, 2]`; PyTorch's fan-out counts dim 0.
    let std = (2.0 / (ch * 4) as f32).sqrt();
    b.put(
        "roi_heads.mask_predictor.conv5_mask.weight".into(),
        vec![ch, ch, 2, 2],
        Draw::Normal(std),
    );
    b.zeros("roi_heads.mask_predictor.conv5_mask.bias".into(), ch);
}

/// The class-dependent layers: `cls_score`, `bbox_pred`, `mask_fcn_logits`.
fn class_layers(b: &mut Builder, num_classes: usize) {
    b.linear("roi_heads.box_predictor.cls_score", 1024, num_classes);
    b.linear("roi_heads.box_predictor.bbox_pred", 1024, 4 * num_classes);
    b.conv_kaiming_out(
        "roi_heads.mask_predictor.mask_fcn_logits",
        256,
        num_classes,
        1,
    );
    b.zeros(
        "roi_heads.mask_predictor.mask_fcn_logits.bias".into(),
        num_classes,
    );
}

/// The class-dependent layers of a checkpoint replaced by fresh ones for `num_classes` (as
/// torchvision's fine-tuning tutorial swaps the predictors), when their size differs.
/// Returns whether they were replaced.
pub fn replace_class_layers(named: &mut NamedTensors, num_classes: usize, seed: u64) -> bool {
    let current = named
        .get("roi_heads.box_predictor.cls_score.weight")
        .map(|t| t.shape[0]);
    if current == Some(num_classes) {
        return false;
    }
    let mut b = Builder {
        rng: SmallRng::seed_from_u64(seed ^ 0x5EED),
        out: NamedTensors::default(),
    };
    class_layers(&mut b, num_classes);
    for (k, t) in b.out.tensors {
        named.insert(k, t);
    }
    true
}

/// Whether `named` is an ImageNet ResNet-50 (`torchvision.models.resnet50`'s keys: `conv1`,
/// `layer1..4`, `fc`) rather than a detection checkpoint.
pub fn is_classification_resnet(named: &NamedTensors) -> bool {
    named.get("conv1.weight").is_some() && named.get("layer4.2.conv3.weight").is_some()
}

/// A whole model from an ImageNet ResNet-50: its body under `backbone.body.` (the classifier
/// `fc` dropped) and fresh FPN and heads.
pub fn from_classification_resnet(
    resnet: &NamedTensors,
    num_classes: usize,
    seed: u64,
) -> NamedTensors {
    let mut out = seeded_init(num_classes, seed);
    for (k, t) in &resnet.tensors {
        if k.starts_with("fc.") || k.ends_with("num_batches_tracked") {
            continue;
        }
        out.insert(format!("backbone.body.{k}"), t.clone());
    }
    out.source = format!("{} (ImageNet backbone) + fresh heads", resnet.source);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::mask_rcnn::MaskRcnn;

    #[test]
    fn fresh_weights_are_a_whole_torchvision_model() {
        let w = seeded_init(3, 0);
        // The host predictor takes them with every key used and none missing.
        let m = MaskRcnn::from_tensors(w.clone()).unwrap();
        assert_eq!(m.num_classes, 3);
        // Kaiming-normal with fan-out: layer4's 3x3 weights have std sqrt(2 / (512 * 9)).
        let t = w.get("backbone.body.layer4.1.conv2.weight").unwrap();
        let var = t.data.iter().map(|v| v * v).sum::<f32>() / t.data.len() as f32;
        let want = 2.0 / (512.0 * 9.0);
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs {want}");
        assert_eq!(seeded_init(3, 0).tensors, w.tensors, "seeded");
    }

    #[test]
    fn class_layers_are_replaced_only_when_the_classes_differ() {
        let mut w = seeded_init(91, 0);
        let fc7 = w.get("roi_heads.box_head.fc7.weight").unwrap().clone();
        assert!(!replace_class_layers(&mut w, 91, 1));
        assert!(replace_class_layers(&mut w, 5, 1));
        assert_eq!(
            w.get("roi_heads.box_predictor.cls_score.weight")
                .unwrap()
                .shape,
            vec![5, 1024]
        );
        assert_eq!(
            w.get("roi_heads.box_predictor.bbox_pred.weight")
                .unwrap()
                .shape,
            vec![20, 1024]
        );
        assert_eq!(
            w.get("roi_heads.mask_predictor.mask_fcn_logits.weight")
                .unwrap()
                .shape,
            vec![5, 256, 1, 1]
        );
        assert_eq!(
            w.get("roi_heads.box_head.fc7.weight").unwrap(),
            &fc7,
            "the rest kept"
        );
        assert_eq!(MaskRcnn::from_tensors(w).unwrap().num_classes, 5);
    }

    #[test]
    fn an_imagenet_resnet_becomes_the_body() {
        let mut resnet = NamedTensors::default();
        let body = seeded_init(2, 7);
        for (k, t) in &body.tensors {
            if let Some(rest) = k.strip_prefix("backbone.body.") {
                resnet.insert(rest, t.clone());
            }
        }
        resnet.insert(
            "fc.weight",
            HostTensor::new(vec![1000, 2048], vec![0.0; 2_048_000]),
        );
        resnet.insert("fc.bias", HostTensor::new(vec![1000], vec![0.0; 1000]));
        assert!(is_classification_resnet(&resnet));
        let w = from_classification_resnet(&resnet, 4, 0);
        assert!(w.get("fc.weight").is_none() && w.get("backbone.body.fc.weight").is_none());
        assert_eq!(
            w.get("backbone.body.layer2.3.conv3.weight"),
            body.get("backbone.body.layer2.3.conv3.weight")
        );
        assert_eq!(MaskRcnn::from_tensors(w).unwrap().num_classes, 4);
    }
}
