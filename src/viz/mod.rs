//! Pictures: a drawing canvas, palettes, overlays and panels, and plots (`plot`: plotters with
//! a bundled font: training curves, per-class bars, confusion heatmaps, per-frame J / F).

pub mod canvas;
pub mod instances;
pub mod overlay;
pub mod palette;
pub mod plot;
pub mod prompts;
