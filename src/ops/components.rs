//! Connected components of a binary mask (as `scipy.ndimage.label` / OpenCV's
//! `connectedComponents`): 4- or 8-connected, labels 1.. in raster order of their first pixel.

/// Which neighbours join two pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Edge neighbours (`scipy.ndimage.label`'s default).
    Four,
    /// Edge and corner neighbours (`skimage.measure.label`'s and OpenCV's default).
    Eight,
}

/// Labels (0 = background) and sizes (index = label; `sizes[0]` is 0) of the components of the
/// nonzero pixels of a row-major `h x w` mask.
pub fn connected_components(
    mask: &[u8],
    h: usize,
    w: usize,
    connectivity: Connectivity,
) -> (Vec<u32>, Vec<usize>) {
    assert_eq!(mask.len(), h * w);
    const FOUR: [(isize, isize); 4] = [(-1, 0), (1, 0), (0, -1), (0, 1)];
    const EIGHT: [(isize, isize); 8] = [
        (-1, -1),
        (-1, 0),
        (-1, 1),
        (0, -1),
        (0, 1),
        (1, -1),
        (1, 0),
        (1, 1),
    ];
    let steps: &[(isize, isize)] = match connectivity {
        Connectivity::Four => &FOUR,
        Connectivity::Eight => &EIGHT,
    };
    let mut labels = vec![0u32; h * w];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    for start in 0..h * w {
        if mask[start] == 0 || labels[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        sizes.push(0);
        labels[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            sizes[id as usize] += 1;
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for &(dy, dx) in steps {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                if mask[q] != 0 && labels[q] == 0 {
                    labels[q] = id;
                    stack.push(q);
                }
            }
        }
    }
    (labels, sizes)
}

#[cfg(test)]
mod tests {
    use super::{Connectivity, connected_components};

    #[test]
    fn diagonal_touch_joins_only_with_eight_neighbours() {
        // 1 0 1
        // 0 1 0
        let m = [1, 0, 1, 0, 1, 0];
        let (l4, s4) = connected_components(&m, 2, 3, Connectivity::Four);
        assert_eq!((l4, s4), (vec![1, 0, 2, 0, 3, 0], vec![0, 1, 1, 1]));
        let (l8, s8) = connected_components(&m, 2, 3, Connectivity::Eight);
        assert_eq!((l8, s8), (vec![1, 0, 1, 0, 1, 0], vec![0, 3]));
    }
}
