//! Training: the run configuration and the loop (AdamW, schedules, validation, checkpoints).

pub mod config;
pub mod mask_rcnn;
pub mod trainer;

pub use config::{Schedule, TrainConfig, demo_config};
pub use trainer::{RunOptions, RunState, TrainOutcome, train};
