//! The host engine's kernels, each written once and tested alone against PyTorch (as
//! `torchvision.ops` is to torchvision). They work on plain row-major `f32` buffers
//! (`[C, H, W]` maps, `[rows, dim]` token matrices) and know no model and no weight file;
//! `crate::nn` builds layers on them, and the models in `crate::models` are written on those.
//! A GPU engine implements this layer.
//!
//! * `matmul`          the one matrix-product entry point (gemm), serial or parallel by size
//! * `bf16`            bf16 products (AVX512_BF16, or a portable kernel with the same sums)
//! * `conv`            2-D convolution: Winograd, 1x1, im2col or depthwise, fused bias + activation
//! * `conv_backward`   input, weight and bias gradients of the dense stride-1 convolution
//! * `conv_transpose`  2x2 stride-2 transposed convolution as one product, and its gradients
//! * `norm`            LayerNorm, LayerNorm2d, GroupNorm, BatchNorm folding
//! * `batch_norm`      BatchNorm in training mode (+ ReLU): batch statistics and fused backward
//! * `activation`      ReLU, GELU (exact / tanh), erf, sigmoid, the vectorisable exp
//! * `softmax`         row softmax
//! * `loss`            softmax cross-entropy + soft Dice over class maps, with the logits' gradient
//! * `attention`       multi-head attention with rotary and score-bias hooks
//! * `deform_attn`     multi-scale deformable attention (bilinear samples over a feature pyramid)
//! * `rope`            axial 2-D rotary embeddings
//! * `pool`            max pooling, 2x2 with the winners' indices and its gradient
//! * `resize`          bilinear (both align_corners modes, antialiased) and nearest resizing
//! * `roi_align`       RoIAlign
//! * `boxes`           box IoU, NMS, batched NMS
//! * `components`      connected components (4- or 8-connected)
//! * `layout`          transposes, head slices, element-wise helpers
//! * `profile`         optional op-by-op timing for the benchmarks' profile tables

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod bf16;
pub mod boxes;
pub mod components;
pub mod conv;
pub mod conv_backward;
pub mod conv_transpose;
pub mod deform_attn;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod profile;
pub mod resize;
pub mod roi_align;
pub mod rope;
pub mod simd;
pub mod softmax;

pub use activation::Activation;
pub use bf16::Precision;
