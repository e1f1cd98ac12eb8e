//! SAM 2 on videos: prompts on frames, then tracking through the video with a memory.
//!
//! * `frames`     a folder of numbered frames or a video file (through `ffmpeg`), read lazily;
//!   the model input as the reference loads frames
//! * `predictor`  the tracking state machine (`SAM2VideoPredictor`)
//! * `prompts`    prompts from JSON, the command line or an indexed first-frame mask
//! * `output`     indexed DAVIS-palette PNGs, per-object masks, overlays, `result.json`

pub mod frames;
pub mod output;
pub mod predictor;
pub mod prompts;
