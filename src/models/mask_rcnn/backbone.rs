//! The ResNet-50 body (He et al. 2016, torchvision's v1.5: the stride on the 3x3 convolution)
//! with every BatchNorm in inference form (torchvision's `FrozenBatchNorm2d`, or an eval-mode
//! `BatchNorm2d`: an affine per channel), folded into its convolution at load. Returns the
//! outputs of `layer1..layer4` (C2-C5, strides 4-32). Keys `backbone.body.*`; the widths come
//! from the weights, so narrower bottleneck ResNets load too.

use crate::nn::{Conv2d, ConvSpec, Weights};
use crate::ops::Activation;
use crate::ops::layout::add_assign;
use crate::ops::pool::max_pool2d;

/// BatchNorm's epsilon in torchvision's ResNets (`FrozenBatchNorm2d` and `BatchNorm2d` alike).
const BN_EPS: f32 = 1e-5;

/// 1x1 -> 3x3 (stride) -> 1x1 with a residual, each convolution with its BatchNorm folded.
struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    /// `planes` wide inside, `out` wide at the output (4 x planes in ResNet-50).
    fn load(
        w: &Weights,
        cin: usize,
        (planes, out): (usize, usize),
        stride: usize,
        downsample: bool,
    ) -> Self {
        let cb = |i: usize, spec: ConvSpec| {
            Conv2d::load_bn(
                &w.pp(format!("conv{i}")),
                &w.pp(format!("bn{i}")),
                spec,
                BN_EPS,
            )
        };
        Self {
            conv1: cb(1, ConvSpec::same(cin, planes, 1)),
            conv2: cb(2, ConvSpec::same(planes, planes, 3).stride(stride)),
            conv3: cb(3, ConvSpec::same(planes, out, 1)),
            downsample: downsample.then(|| {
                let d = w.pp("downsample");
                Conv2d::load_bn(
                    &d.pp(0),
                    &d.pp(1),
                    ConvSpec::same(cin, out, 1).stride(stride),
                    BN_EPS,
                )
            }),
        }
    }

    fn forward(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (y, _, _) = self.conv1.forward(x, h, w, Activation::Relu);
        let (y, ho, wo) = self.conv2.forward(&y, h, w, Activation::Relu);
        let (mut y, _, _) = self.conv3.forward(&y, ho, wo, Activation::None);
        match &self.downsample {
            Some(d) => add_assign(&mut y, &d.forward(x, h, w, Activation::None).0),
            None => add_assign(&mut y, x),
        }
        Activation::Relu.apply(&mut y);
        (y, ho, wo)
    }
}

/// A feature map `[c, h, w]`.
pub struct FeatureMap {
    pub data: Vec<f32>,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

pub struct ResNet {
    stem: Conv2d,
    layers: Vec<Vec<Bottleneck>>,
}

/// Blocks per stage of ResNet-50.
pub const RESNET50_LAYERS: [usize; 4] = [3, 4, 6, 3];

impl ResNet {
    /// `w` scoped to the body (`backbone.body`); the depth and the widths of each stage are read
    /// from the keys (ResNet-50's when a key is missing, which `Weights::finish` reports).
    pub fn load(w: &Weights) -> Self {
        let stem_width = w.dim("conv1.weight", 0).unwrap_or(64);
        let stem = Conv2d::load_bn(
            &w.pp("conv1"),
            &w.pp("bn1"),
            ConvSpec::same(3, stem_width, 7).stride(2),
            BN_EPS,
        );
        let mut cin = stem_width;
        let layers = (0..4)
            .map(|s| {
                let l = w.pp(format!("layer{}", s + 1));
                let n = l.count_blocks("").max(1);
                (0..n)
                    .map(|i| {
                        let bw = l.pp(i);
                        let planes = bw.dim("conv1.weight", 0).unwrap_or(64 << s);
                        let out = bw.dim("conv3.weight", 0).unwrap_or(planes * 4);
                        let stride = if i == 0 && s > 0 { 2 } else { 1 };
                        let downsample = i == 0 || bw.contains("downsample.0.weight");
                        let b = Bottleneck::load(&bw, cin, (planes, out), stride, downsample);
                        cin = out;
                        b
                    })
                    .collect()
            })
            .collect();
        Self { stem, layers }
    }

    /// The channels of the four stages' outputs.
    pub fn channels(&self) -> Vec<usize> {
        self.layers
            .iter()
            .map(|l| l.last().map_or(0, |b| b.conv3.cout()))
            .collect()
    }

    /// The stem and the first `stages` stages of a normalised `[3, h, w]` image: the last
    /// output (the next stage's input) and each stage's output.
    pub fn forward_frozen(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        stages: usize,
    ) -> (FeatureMap, Vec<FeatureMap>) {
        let (y, h, w) = self.stem.forward(x, h, w, Activation::Relu);
        let (mut y, mut h, mut w) = max_pool2d(&y, self.stem.cout(), h, w, 3, 2, 1);
        let mut outs = Vec::new();
        for stage in &self.layers[..stages] {
            for b in stage {
                (y, h, w) = b.forward(&y, h, w);
            }
            outs.push(FeatureMap {
                data: y.clone(),
                c: y.len() / (h * w),
                h,
                w,
            });
        }
        let c = y.len() / (h * w);
        (FeatureMap { data: y, c, h, w }, outs)
    }

    /// C2-C5 of a normalised `[3, h, w]` image.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<FeatureMap> {
        let (y, h, w) = self.stem.forward(x, h, w, Activation::Relu);
        let (mut y, mut h, mut w) = max_pool2d(&y, self.stem.cout(), h, w, 3, 2, 1);
        let mut outs = Vec::new();
        for stage in &self.layers {
            for b in stage {
                (y, h, w) = b.forward(&y, h, w);
            }
            let c = y.len() / (h * w);
            outs.push(FeatureMap {
                data: y.clone(),
                c,
                h,
                w,
            });
        }
        outs
    }
}
