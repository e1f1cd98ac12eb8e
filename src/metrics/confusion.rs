//! Confusion matrix accumulated over a whole dataset, and the region metrics derived from it.

/// `counts[gt * n + pred]` pixels whose ground truth is `gt` and prediction is `pred`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    pub num_classes: usize,
    pub counts: Vec<u64>,
}

/// Pixels whose prediction is outside `0..num_classes` (and not ignored) are counted here
/// instead of being silently dropped; callers turn a non-zero value into an error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutOfRange {
    pub gt: u64,
    pub pred: u64,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Adds one image. Pixels whose ground truth equals `ignore_index` are skipped.
    /// Returns how many pixels had a label outside the class range.
    pub fn add(&mut self, pred: &[u32], gt: &[u32], ignore_index: Option<u32>) -> OutOfRange {
        assert_eq!(
            pred.len(),
            gt.len(),
            "prediction and ground truth differ in size"
        );
        let n = self.num_classes as u32;
        let mut bad = OutOfRange::default();
        for (&p, &g) in pred.iter().zip(gt) {
            if Some(g) == ignore_index {
                continue;
            }
            if g >= n {
                bad.gt += 1;
                continue;
            }
            if p >= n {
                bad.pred += 1;
                continue;
            }
            self.counts[(g * n + p) as usize] += 1;
        }
        bad
    }

    pub fn merge(&mut self, other: &ConfusionMatrix) {
        assert_eq!(self.num_classes, other.num_classes);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
    }

    pub fn get(&self, gt: usize, pred: usize) -> u64 {
        self.counts[gt * self.num_classes + pred]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Pixels of class `c` in the ground truth (row sum).
    pub fn gt_count(&self, c: usize) -> u64 {
        (0..self.num_classes).map(|p| self.get(c, p)).sum()
    }

    /// Pixels predicted as class `c` (column sum).
    pub fn pred_count(&self, c: usize) -> u64 {
        (0..self.num_classes).map(|g| self.get(g, c)).sum()
    }

    pub fn pixel_accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return f64::NAN;
        }
        let tp: u64 = (0..self.num_classes).map(|c| self.get(c, c)).sum();
        tp as f64 / total as f64
    }

    /// Recall of class `c`; NaN when the class has no ground-truth pixels.
    pub fn class_accuracy(&self, c: usize) -> f64 {
        ratio(self.get(c, c), self.gt_count(c))
    }

    /// Intersection over union of class `c`; NaN when the class is in neither GT nor prediction.
    pub fn iou(&self, c: usize) -> f64 {
        let tp = self.get(c, c);
        ratio(tp, self.gt_count(c) + self.pred_count(c) - tp)
    }

    /// Dice (F1) of class `c`; NaN when the class is in neither GT nor prediction.
    pub fn dice(&self, c: usize) -> f64 {
        ratio(2 * self.get(c, c), self.gt_count(c) + self.pred_count(c))
    }

    pub fn mean_accuracy(&self) -> f64 {
        nan_mean((0..self.num_classes).map(|c| self.class_accuracy(c)))
    }

    /// Mean IoU over the classes that appear in GT or prediction (NaN-mean, as mmsegmentation).
    pub fn miou(&self) -> f64 {
        nan_mean((0..self.num_classes).map(|c| self.iou(c)))
    }

    pub fn mean_dice(&self) -> f64 {
        nan_mean((0..self.num_classes).map(|c| self.dice(c)))
    }

    /// Frequency-weighted IoU: sum over classes of (GT frequency x IoU).
    pub fn fwiou(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return f64::NAN;
        }
        (0..self.num_classes)
            .map(|c| {
                let iou = self.iou(c);
                if iou.is_nan() {
                    0.0
                } else {
                    self.gt_count(c) as f64 / total as f64 * iou
                }
            })
            .sum()
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Mean of the non-NaN values; NaN when there are none.
pub fn nan_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_class_example() {
        let gt = [0, 0, 1, 1, 255];
        let pred = [0, 1, 1, 1, 0];
        let mut cm = ConfusionMatrix::new(2);
        let bad = cm.add(&pred, &gt, Some(255));
        assert_eq!(bad, OutOfRange::default());
        assert_eq!(cm.total(), 4);
        assert!((cm.pixel_accuracy() - 0.75).abs() < 1e-12);
        assert!((cm.iou(0) - 0.5).abs() < 1e-12);
        assert!((cm.iou(1) - 2.0 / 3.0).abs() < 1e-12);
        assert!((cm.dice(1) - 0.8).abs() < 1e-12);
        assert!((cm.class_accuracy(0) - 0.5).abs() < 1e-12);
        // fwiou = 0.5*0.5 + 0.5*2/3
        assert!((cm.fwiou() - (0.25 + 1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_nan_and_excluded() {
        let mut cm = ConfusionMatrix::new(3);
        cm.add(&[0, 1], &[0, 1], None);
        assert!(cm.iou(2).is_nan());
        assert!((cm.miou() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn out_of_range_labels_are_reported() {
        let mut cm = ConfusionMatrix::new(2);
        let bad = cm.add(&[0, 5, 0], &[0, 1, 7], Some(255));
        assert_eq!(bad, OutOfRange { gt: 1, pred: 1 });
    }
}
