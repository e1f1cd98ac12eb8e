//! Promptable segmentation with Segment Anything, around the networks in `models::sam`:
//!
//! * `resize`      Pillow's bilinear resize, bit for bit (the reference preprocessing)
//! * `transforms`  ResizeLongestSide geometry and coordinate transforms
//! * `predictor`   set_image / predict, embedding files
//! * `automatic`   the automatic mask generator (point grid, filtering, NMS, crops, RLE records)
//! * `amg`         the generator's data helpers (grids, crop boxes, stability, regions, RLE)
//! * `sam2_predictor`  SAM 2's image predictor
//! * `video`       SAM 2 on videos: frames, the tracker, prompts, VOS output

pub mod amg;
pub mod any_model;
pub mod automatic;
pub mod predictor;
pub mod resize;
pub mod sam2_predictor;
pub mod transforms;
pub mod video;
