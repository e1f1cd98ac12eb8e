//! Models, one folder each, with files named after the parts of the paper.

pub mod mask2former;
pub mod mask_rcnn;
pub mod sam;
pub mod sam2;
pub mod tensor_io;
pub mod unet;
