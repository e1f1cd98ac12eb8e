//! SAM's geometry: ResizeLongestSide (the longest side to the model input, with the reference
//! rounding) and coordinate transforms.

/// The size `(h, w)` an image of `(h, w)` is resized to so that its longest side is `long`:
/// `scale = long / max(h, w)`, each side `int(side * scale + 0.5)` (as `get_preprocess_shape`).
pub fn preprocess_shape(h: usize, w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / h.max(w) as f64;
    let nh = (h as f64 * scale + 0.5) as usize;
    let nw = (w as f64 * scale + 0.5) as usize;
    (nh, nw)
}

/// Point `(x, y)` in original-image pixels to the resized frame, as `apply_coords` (in f64).
pub fn apply_coords(x: f64, y: f64, orig: (usize, usize), long: usize) -> (f64, f64) {
    let (nh, nw) = preprocess_shape(orig.0, orig.1, long);
    (
        x * (nw as f64 / orig.1 as f64),
        y * (nh as f64 / orig.0 as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_like_the_reference() {
        assert_eq!(preprocess_shape(1200, 1800, 1024), (683, 1024));
        assert_eq!(preprocess_shape(375, 500, 1024), (768, 1024));
        assert_eq!(preprocess_shape(1024, 1024, 1024), (1024, 1024));
        assert_eq!(preprocess_shape(10, 3000, 1024), (3, 1024));
    }
}
