//! Training: the run configuration and the loop (AdamW, schedules, validation, checkpoints).

pub mod config;
pub mod trainer;

pub use config::{Schedule, TrainConfig};
pub use trainer::{RunOptions, RunState, TrainOutcome, train};
