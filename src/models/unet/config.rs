//! U-Net architecture configuration.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsampling {
    /// ConvTranspose2d(c, c/2, 2, stride 2): the paper's "up-convolution".
    Transpose,
    /// Bilinear 2x up-sampling (align_corners = false) followed by a 1x1 conv halving channels.
    Bilinear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    /// Channels of the first level; level i has base_width * 2^i.
    pub base_width: usize,
    /// Number of down-sampling steps (the classic network has 4).
    pub depth: usize,
    pub upsampling: Upsampling,
    pub batch_norm: bool,
}

impl UNetConfig {
    /// The classic architecture: widths 64..1024, 4 levels, transposed convs, BatchNorm.
    pub fn classic(in_channels: usize, num_classes: usize) -> Self {
        Self {
            in_channels,
            num_classes,
            base_width: 64,
            depth: 4,
            upsampling: Upsampling::Transpose,
            batch_norm: true,
        }
    }

    pub fn width(&self, level: usize) -> usize {
        self.base_width << level
    }

    /// Input sides must be multiples of this (2^depth).
    pub fn stride(&self) -> usize {
        1 << self.depth
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.in_channels == 0 || self.num_classes == 0 || self.base_width == 0 {
            anyhow::bail!("U-Net needs at least one input channel, one class and a base width > 0");
        }
        if self.depth == 0 || self.depth > 7 {
            anyhow::bail!("U-Net depth must be between 1 and 7, got {}", self.depth);
        }
        if self.base_width > 4096 || self.in_channels > 4096 {
            anyhow::bail!(
                "absurd U-Net size: base width {} and {} input channels (at most 4096 each)",
                self.base_width,
                self.in_channels
            );
        }
        let params = self.num_trainable_params();
        if params > 2_000_000_000 {
            anyhow::bail!(
                "this U-Net would have {params} parameters; lower --base-width or --depth"
            );
        }
        if self.num_classes > 65536 {
            anyhow::bail!(
                "{} classes is more than segrs' label maps hold (65536)",
                self.num_classes
            );
        }
        Ok(())
    }

    /// Trainable parameters as PyTorch counts them (BatchNorm running statistics excluded).
    pub fn num_trainable_params(&self) -> usize {
        let conv = |cin: usize, cout: usize, k: usize| cin * cout * k * k + cout;
        let bn = |c: usize| if self.batch_norm { 2 * c } else { 0 };
        let double = |cin: usize, cout: usize| {
            conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
        };
        let mut n = 0;
        let mut cin = self.in_channels;
        for i in 0..self.depth {
            n += double(cin, self.width(i));
            cin = self.width(i);
        }
        n += double(self.width(self.depth - 1), self.width(self.depth));
        for i in 0..self.depth {
            n += match self.upsampling {
                Upsampling::Transpose => conv(self.width(i + 1), self.width(i), 2),
                Upsampling::Bilinear => conv(self.width(i + 1), self.width(i), 1),
            };
            n += double(2 * self.width(i), self.width(i));
        }
        n + conv(self.base_width, self.num_classes, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused() {
        let mut c = UNetConfig::classic(3, 2);
        c.base_width = 100_000;
        assert!(c.validate().unwrap_err().to_string().contains("absurd"));
        c.base_width = 512;
        c.depth = 7;
        assert!(c.validate().unwrap_err().to_string().contains("parameters"));
        assert!(UNetConfig::classic(3, 21).validate().is_ok());
    }

    #[test]
    fn classic_parameter_count_matches_pytorch() {
        assert_eq!(
            UNetConfig::classic(3, 21).num_trainable_params(),
            31_044_821
        );
    }
}
