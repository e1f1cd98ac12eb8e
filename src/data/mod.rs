//! Data: decoding files, folder datasets, preprocessing, augmentation and the synthetic demo set.
//! Data flows one way: decode (`image_io`, or `rows` for images read a band at a time) -> check
//! and pair (`folder`) -> preprocess -> augment.

pub mod augment;
pub mod check;
pub mod coco_instances;
pub mod folder;
pub mod image_io;
pub mod labels;
pub mod preprocess;
pub mod rows;
pub mod shard;
pub mod synthetic;
