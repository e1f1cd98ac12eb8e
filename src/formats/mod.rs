//! Dataset and result formats shared by instance, panoptic and video work: COCO instances and
//! results JSON (polygons, RLE), COCO panoptic.

pub mod coco;
pub mod coco_check;
pub mod instances;
pub mod panoptic;
