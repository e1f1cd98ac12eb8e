//! segrs: image segmentation in Rust.
//!
//! Data flows one way: `data` (decode, check, preprocess, augment) -> `models` -> `predict`
//! (postprocess, write) -> `metrics` / `viz`. `train` drives the models with `losses`;
//! `weights` reads and writes checkpoint files; `cli` is the `segrs` binary.

pub mod cli;
pub mod data;
pub mod device;
pub mod formats;
pub mod losses;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod sam;
pub mod train;
pub mod viz;
pub mod weights;
