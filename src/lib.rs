//! segrs: image segmentation in Rust.
//!
//! Data flows one way: `data` (decode, check, preprocess, augment) -> `models` -> `predict`
//! (postprocess, write) -> `metrics` / `viz`. `train` drives the models with `losses`;
//! `weights` reads and writes weight files (which `models` turn into networks); `io` writes output
//! files atomically. The `segrs` command line (`src/main.rs`, `src/cli/`) is a client of this
//! library, not a part of it.

pub mod autodiff;
pub mod data;
pub mod device;
pub mod formats;
pub mod io;
pub mod losses;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod predict;
pub mod sam;
pub mod serve;
pub mod train;
pub mod viz;
pub mod weights;
