//! Mask R-CNN's networks as one burn module for training: the trainable ResNet-50 stages with
//! frozen BatchNorm, the FPN, the RPN head, the box head (`TwoMLPHead` + predictor) and the
//! mask head (four 3x3 convolutions, the 2x2 up-convolution, the per-class logits). Stages
//! that `trainable_backbone_layers` freezes run on the host engine instead
//! ([`FrozenStages`]); their weights never change and pass through to checkpoints unchanged.

pub use super::layers::Norm;
use super::layers::{Conv, Linear, Readout, Source, UpConv};
use crate::models::mask_rcnn::backbone::{FeatureMap, ResNet};
use crate::models::tensor_io::tensor4;
use crate::nn::Weights;
use crate::weights::NamedTensors;
use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

/// Input channels of C2-C5.
pub const STAGE_CHANNELS: [usize; 4] = [256, 512, 1024, 2048];

/// A ResNet bottleneck: 1x1 -> 3x3 (stride) -> 1x1, each with its frozen BatchNorm, residual.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv,
    pub conv2: Conv,
    pub conv3: Conv,
    pub downsample: Option<Conv>,
}

impl Bottleneck {
    fn load(
        s: &Source,
        p: &str,
        cin: usize,
        planes: usize,
        stride: usize,
        norm: Norm,
    ) -> Result<Self> {
        let c = |i: usize, cin: usize, cout: usize, k: usize, st: usize| {
            Conv::load_with_norm(
                s,
                &format!("{p}.conv{i}"),
                &format!("{p}.bn{i}"),
                norm,
                cin,
                cout,
                k,
                st,
            )
        };
        let out = planes * 4;
        let downsample = if s.named.get(&format!("{p}.downsample.0.weight")).is_some() {
            Some(Conv::load_with_norm(
                s,
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                norm,
                cin,
                out,
                1,
                stride,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1: c(1, cin, planes, 1, 1)?,
            conv2: c(2, planes, planes, 3, stride)?,
            conv3: c(3, planes, out, 1, 1)?,
            downsample,
        })
    }

    fn export(&self, p: &str, out: &mut NamedTensors, r: &Readout) {
        for (i, c) in [&self.conv1, &self.conv2, &self.conv3]
            .into_iter()
            .enumerate()
        {
            c.export_with_norm(
                &format!("{p}.conv{}", i + 1),
                &format!("{p}.bn{}", i + 1),
                out,
                r,
            );
        }
        if let Some(d) = &self.downsample {
            d.export_with_norm(
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                out,
                r,
            );
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv1.forward_act(x.clone(), true);
        let y = self.conv2.forward_act(y, true);
        let y = self.conv3.forward_act(y, false);
        let identity = match &self.downsample {
            Some(d) => d.forward_act(x, false),
            None => x,
        };
        relu(y + identity)
    }
}

/// The trainable part of the networks.
#[derive(Module, Debug)]
pub struct Network {
    /// `conv1` + `bn1` when the whole body trains (`trainable_backbone_layers` 5).
    pub stem: Option<Conv>,
    /// The trained stages among `layer1..layer4`, in order.
    pub stages: Vec<Vec<Bottleneck>>,
    /// Index (0-3) of the first trained stage; 4 when the body is frozen.
    pub first_stage: usize,
    pub fpn_inner: Vec<Conv>,
    pub fpn_layer: Vec<Conv>,
    pub rpn_conv: Conv,
    pub rpn_cls: Conv,
    pub rpn_bbox: Conv,
    pub fc6: Linear,
    pub fc7: Linear,
    pub cls_score: Linear,
    pub bbox_pred: Linear,
    pub mask_convs: Vec<Conv>,
    pub mask_up: UpConv,
    pub mask_logits: Conv,
    pub num_classes: usize,
}

/// The frozen front of the body on the host engine (BatchNorm folded): the stem and the stages
/// before the first trained one.
pub struct FrozenStages {
    body: Option<ResNet>,
    /// How many of `layer1..layer4` are frozen.
    pub stages: usize,
}

/// The outputs of the body's frozen part for a batch: the next stage's input and the frozen
/// stages' outputs (C2.. in order), each `[n, c, h, w]`.
pub struct FrozenOutputs {
    pub next: Option<Tensor<4>>,
    pub features: Vec<Tensor<4>>,
}

impl FrozenStages {
    /// The frozen stages' outputs for a batch `[n, 3, h, w]` of normalised images.
    pub fn forward(
        &self,
        images: &[f32],
        n: usize,
        h: usize,
        w: usize,
        device: &Device,
    ) -> FrozenOutputs {
        let Some(body) = &self.body else {
            return FrozenOutputs {
                next: Some(tensor4(images.to_vec(), [n, 3, h, w], device)),
                features: Vec::new(),
            };
        };
        let per = 3 * h * w;
        let runs: Vec<(FeatureMap, Vec<FeatureMap>)> = (0..n)
            .map(|i| body.forward_frozen(&images[i * per..(i + 1) * per], h, w, self.stages))
            .collect();
        let stack = |maps: Vec<&FeatureMap>| {
            let (c, fh, fw) = (maps[0].c, maps[0].h, maps[0].w);
            let mut data = Vec::with_capacity(n * c * fh * fw);
            for m in maps {
                data.extend_from_slice(&m.data);
            }
            tensor4(data, [n, c, fh, fw], device)
        };
        let features = (0..self.stages)
            .map(|s| stack(runs.iter().map(|r| &r.1[s]).collect()))
            .collect();
        let next = (self.stages < 4).then(|| stack(runs.iter().map(|r| &r.0).collect()));
        FrozenOutputs { next, features }
    }
}

/// Loads the training networks from a torchvision v1 state_dict (current key names):
/// `trainable_layers` (0-5) of the body train, counted from `layer4` as torchvision's
/// `trainable_backbone_layers`.
/// With [`Norm::Batch`] the whole body trains (`trainable_layers` must be 5).
pub fn load(
    named: &NamedTensors,
    trainable_layers: usize,
    norm: Norm,
    device: &Device,
) -> Result<(Network, FrozenStages)> {
    if trainable_layers > 5 {
        bail!("trainable backbone layers must be 0-5, got {trainable_layers}");
    }
    if norm == Norm::Batch && trainable_layers != 5 {
        bail!(
            "BatchNorm with batch statistics trains the whole body: trainable backbone layers must be 5, got {trainable_layers}"
        );
    }
    if named.get("roi_heads.box_head.fc6.weight").is_none() {
        bail!(
            "{}: training supports maskrcnn_resnet50_fpn (v1: TwoMLPHead box head); this checkpoint has no roi_heads.box_head.fc6",
            named.source
        );
    }
    let s = Source {
        named,
        device: device.clone(),
        trainable: true,
    };
    let frozen_stages = 4 - trainable_layers.min(4);
    let body = if trainable_layers < 5 {
        let w = Weights::new(named);
        Some(ResNet::load(&w.pp("backbone.body")))
    } else {
        None
    };
    let stem = if trainable_layers == 5 {
        Some(Conv::load_with_norm(
            &s,
            "backbone.body.conv1",
            "backbone.body.bn1",
            norm,
            3,
            64,
            7,
            2,
        )?)
    } else {
        None
    };
    let mut stages = Vec::new();
    let mut cin = if frozen_stages == 0 {
        64
    } else {
        STAGE_CHANNELS[frozen_stages - 1]
    };
    for st in frozen_stages..4 {
        let planes = 64 << st;
        let n = named.count_blocks(&format!("backbone.body.layer{}.", st + 1));
        if n == 0 {
            bail!(
                "{}: no blocks in backbone.body.layer{}",
                named.source,
                st + 1
            );
        }
        let mut blocks = Vec::new();
        for i in 0..n {
            let stride = if i == 0 && st > 0 { 2 } else { 1 };
            let p = format!("backbone.body.layer{}.{i}", st + 1);
            blocks.push(Bottleneck::load(&s, &p, cin, planes, stride, norm)?);
            cin = planes * 4;
        }
        stages.push(blocks);
    }
    let ch = named
        .get("backbone.fpn.layer_blocks.0.0.weight")
        .map(|t| t.shape[0])
        .unwrap_or(256);
    let fpn_inner = (0..4)
        .map(|i| {
            Conv::load(
                &s,
                &format!("backbone.fpn.inner_blocks.{i}.0"),
                STAGE_CHANNELS[i],
                ch,
                1,
                1,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let fpn_layer = (0..4)
        .map(|i| {
            Conv::load(
                &s,
                &format!("backbone.fpn.layer_blocks.{i}.0"),
                ch,
                ch,
                3,
                1,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let a = named
        .get("rpn.head.cls_logits.weight")
        .map(|t| t.shape[0])
        .unwrap_or(3);
    if a != crate::models::mask_rcnn::anchors::ASPECT_RATIOS.len() {
        bail!(
            "{}: the RPN predicts {a} anchors per position; training supports torchvision's default anchors (3)",
            named.source
        );
    }
    let rep = named
        .get("roi_heads.box_head.fc6.weight")
        .map(|t| t.shape[0])
        .unwrap_or(1024);
    let nc = named
        .get("roi_heads.box_predictor.cls_score.weight")
        .map(|t| t.shape[0])
        .unwrap_or(91);
    let n_mask = named.count_blocks("roi_heads.mask_head.");
    let mut mcin = ch;
    let mut mask_convs = Vec::new();
    for i in 0..n_mask {
        let out = named
            .get(&format!("roi_heads.mask_head.{i}.0.weight"))
            .map(|t| t.shape[0])
            .unwrap_or(256);
        mask_convs.push(Conv::load(
            &s,
            &format!("roi_heads.mask_head.{i}.0"),
            mcin,
            out,
            3,
            1,
        )?);
        mcin = out;
    }
    let up = named
        .get("roi_heads.mask_predictor.conv5_mask.weight")
        .map(|t| t.shape[1])
        .unwrap_or(256);
    let net = Network {
        stem,
        stages,
        first_stage: frozen_stages,
        fpn_inner,
        fpn_layer,
        rpn_conv: Conv::load(&s, "rpn.head.conv.0.0", ch, ch, 3, 1)?,
        rpn_cls: Conv::load(&s, "rpn.head.cls_logits", ch, a, 1, 1)?,
        rpn_bbox: Conv::load(&s, "rpn.head.bbox_pred", ch, 4 * a, 1, 1)?,
        fc6: Linear::load(&s, "roi_heads.box_head.fc6", ch * 49, rep)?,
        fc7: Linear::load(&s, "roi_heads.box_head.fc7", rep, rep)?,
        cls_score: Linear::load(&s, "roi_heads.box_predictor.cls_score", rep, nc)?,
        bbox_pred: Linear::load(&s, "roi_heads.box_predictor.bbox_pred", rep, 4 * nc)?,
        mask_convs,
        mask_up: UpConv::load(&s, "roi_heads.mask_predictor.conv5_mask", mcin, up)?,
        mask_logits: Conv::load(&s, "roi_heads.mask_predictor.mask_fcn_logits", up, nc, 1, 1)?,
        num_classes: nc,
    };
    Ok((
        net,
        FrozenStages {
            body,
            stages: frozen_stages,
        },
    ))
}

impl Network {
    /// The trained tensors (or their gradients) under torchvision's keys; frozen BatchNorms and
    /// stages are not included: they never change.
    pub fn export(&self, out: &mut NamedTensors, r: &Readout) {
        if let Some(s) = &self.stem {
            s.export_with_norm("backbone.body.conv1", "backbone.body.bn1", out, r);
        }
        for (k, stage) in self.stages.iter().enumerate() {
            for (i, b) in stage.iter().enumerate() {
                b.export(
                    &format!("backbone.body.layer{}.{i}", self.first_stage + k + 1),
                    out,
                    r,
                );
            }
        }
        for i in 0..4 {
            self.fpn_inner[i].export(&format!("backbone.fpn.inner_blocks.{i}.0"), out, r);
            self.fpn_layer[i].export(&format!("backbone.fpn.layer_blocks.{i}.0"), out, r);
        }
        self.rpn_conv.export("rpn.head.conv.0.0", out, r);
        self.rpn_cls.export("rpn.head.cls_logits", out, r);
        self.rpn_bbox.export("rpn.head.bbox_pred", out, r);
        self.fc6.export("roi_heads.box_head.fc6", out, r);
        self.fc7.export("roi_heads.box_head.fc7", out, r);
        self.cls_score
            .export("roi_heads.box_predictor.cls_score", out, r);
        self.bbox_pred
            .export("roi_heads.box_predictor.bbox_pred", out, r);
        for (i, c) in self.mask_convs.iter().enumerate() {
            c.export(&format!("roi_heads.mask_head.{i}.0"), out, r);
        }
        self.mask_up
            .export("roi_heads.mask_predictor.conv5_mask", out, r);
        self.mask_logits
            .export("roi_heads.mask_predictor.mask_fcn_logits", out, r);
    }

    /// P2-P6 of a batch, given the body's frozen outputs.
    pub fn features(&self, frozen: FrozenOutputs) -> Vec<Tensor<4>> {
        let mut c = frozen.features;
        if let Some(mut x) = frozen.next {
            if let Some(stem) = &self.stem {
                x = stem.forward_act(x, true);
                x = max_pool2d(
                    x,
                    MaxPoolOptions {
                        kernel_size: [3, 3],
                        stride: [2, 2],
                        padding: [(1, 1); 2],
                        dilation: [1, 1],
                        ceil_mode: false,
                    },
                );
            }
            for stage in &self.stages {
                for b in stage {
                    x = b.forward(x);
                }
                c.push(x.clone());
            }
        }
        self.fpn(c)
    }

    /// torchvision's `FeaturePyramidNetwork` with `LastLevelMaxPool` (P6).
    fn fpn(&self, c: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let n = c.len();
        let mut inner = self.fpn_inner[n - 1].forward(c[n - 1].clone());
        let mut outs = vec![self.fpn_layer[n - 1].forward(inner.clone())];
        for i in (0..n - 1).rev() {
            let lateral = self.fpn_inner[i].forward(c[i].clone());
            let [_, _, h, w] = lateral.dims();
            inner = lateral + upsample_nearest(inner, (h, w));
            outs.insert(0, self.fpn_layer[i].forward(inner.clone()));
        }
        let p6 = max_pool2d(
            outs[n - 1].clone(),
            MaxPoolOptions {
                kernel_size: [1, 1],
                stride: [2, 2],
                padding: [(0, 0); 2],
                dilation: [1, 1],
                ceil_mode: false,
            },
        );
        outs.push(p6);
        outs
    }

    /// The RPN head on one level: objectness `[n, h * w * A]` and deltas `[n, h * w * A, 4]`,
    /// ordered (row, column, anchor) as the anchors.
    pub fn rpn(&self, f: Tensor<4>) -> (Tensor<2>, Tensor<3>) {
        let t = relu(self.rpn_conv.forward(f));
        let obj = self.rpn_cls.forward(t.clone());
        let del = self.rpn_bbox.forward(t);
        let [n, a, h, w] = obj.dims();
        let obj = obj.permute([0, 2, 3, 1]).reshape([n, h * w * a]);
        let del = del
            .reshape([n, a, 4, h, w])
            .permute([0, 3, 4, 1, 2])
            .reshape([n, h * w * a, 4]);
        (obj, del)
    }

    /// The box head and predictor on pooled `[k, c, 7, 7]` features: class logits `[k, classes]`
    /// and per-class deltas `[k, classes * 4]`.
    pub fn boxes(&self, pooled: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let [k, c, h, w] = pooled.dims();
        let x = relu(self.fc6.forward(pooled.reshape([k, c * h * w])));
        let x = relu(self.fc7.forward(x));
        (self.cls_score.forward(x.clone()), self.bbox_pred.forward(x))
    }

    /// The mask head and predictor on pooled `[k, c, 14, 14]` features: `[k, classes, 28, 28]`.
    pub fn masks(&self, pooled: Tensor<4>) -> Tensor<4> {
        let mut x = pooled;
        for c in &self.mask_convs {
            x = relu(c.forward(x));
        }
        self.mask_logits.forward(relu(self.mask_up.forward(x)))
    }
}

/// Nearest-neighbour upsampling to `size` (`F.interpolate(mode="nearest")`): a repeat when the
/// size is exactly twice the input's, as in the padded FPN; torchvision's index rule otherwise.
fn upsample_nearest(x: Tensor<4>, (h, w): (usize, usize)) -> Tensor<4> {
    let [n, c, ih, iw] = x.dims();
    if h == 2 * ih && w == 2 * iw {
        return x
            .reshape([n, c, ih, 1, iw, 1])
            .expand([n, c, ih, 2, iw, 2])
            .reshape([n, c, h, w]);
    }
    let device = x.device();
    let rows: Vec<i64> = (0..h).map(|y| ((y * ih) / h) as i64).collect();
    let cols: Vec<i64> = (0..w).map(|v| ((v * iw) / w) as i64).collect();
    let idx =
        |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v.clone(), [v.len()]), &device);
    x.select(2, idx(rows)).select(3, idx(cols))
}
