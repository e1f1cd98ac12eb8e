//! Host layers, built from a checkpoint's named tensors by one prefix-scoped loader
//! ([`Weights`]) and run on the kernels of `crate::ops`. Key names follow PyTorch's modules
//! (`weight`, `bias`, `running_mean`, ...), so a layer loads from official checkpoints and
//! segrs' own files alike.
//!
//! * `loader`     [`Weights`]: `w.pp("blocks").pp(3)`, full-name reports of missing keys
//! * `linear`     Linear
//! * `conv`       Conv2d (optionally with a folded BatchNorm), ConvTranspose2d (2x2, stride 2)
//! * `norm`       LayerNorm, LayerNorm2d
//! * `mlp`        Linear stacks with an activation between layers
//! * `attention`  multi-head attention with q/k/v/out projections

pub mod attention;
pub mod conv;
pub mod linear;
pub mod loader;
pub mod mlp;
pub mod norm;

pub use attention::Attention;
pub use conv::{Conv2d, ConvSpec, ConvTranspose2d};
pub use linear::Linear;
pub use loader::Weights;
pub use mlp::Mlp;
pub use norm::{LayerNorm, LayerNorm2d};
