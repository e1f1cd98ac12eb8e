//! Pictures: a drawing canvas, palettes, overlays and panels, training curves.

pub mod canvas;
pub mod curve;
pub mod instances;
pub mod overlay;
pub mod palette;
pub mod prompts;
