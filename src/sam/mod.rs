//! Promptable segmentation with Segment Anything, around the networks in `models::sam`:
//!
//! * `resize`      Pillow's bilinear resize, bit for bit (the reference preprocessing)
//! * `transforms`  ResizeLongestSide geometry and PyTorch's bilinear mask upsampling
//! * `predictor`   set_image / predict, embedding files
//! * `automatic`   the automatic mask generator (point grid, filtering, NMS, crops, RLE records)

pub mod automatic;
pub mod predictor;
pub mod resize;
pub mod transforms;
