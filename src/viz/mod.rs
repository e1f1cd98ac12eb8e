//! Pictures: a drawing canvas with anti-aliased labels (`font`: the bundled DejaVu Sans),
//! palettes, overlays and panels, and plots (`plot`: plotters with the same font: training
//! curves, per-class bars, confusion heatmaps, per-frame J / F, COCO precision-recall).

pub mod canvas;
pub mod font;
pub mod instances;
pub mod overlay;
pub mod palette;
pub mod plot;
pub mod prompts;
