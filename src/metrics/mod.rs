//! Metrics: the confusion matrix and region metrics, boundary metrics, and the semantic report.

pub mod boundary;
pub mod boundary_ap;
pub mod coco;
pub mod confusion;
pub mod panoptic;
pub mod segments;
pub mod semantic;
pub mod video;
