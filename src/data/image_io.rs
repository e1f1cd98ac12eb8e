//! Decoding images and label masks from disk, and writing label maps back.
//!
//! Every error names the file and the problem.

use crate::io::write_atomic;
use anyhow::{Context, Result, bail};
use std::io::{BufReader, Write};
use std::path::Path;

/// Largest side accepted for an image or mask (larger inputs are almost surely corrupt).
pub const MAX_SIDE: u32 = 16384;

/// An image as floats in [0, 1], row-major, channels interleaved (HWC).
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Picture {
    /// The image with exactly `channels` channels (1 or 3): RGB -> gray by ITU-R 601 luma,
    /// gray -> RGB by replication; alpha is dropped.
    pub fn with_channels(&self, channels: usize) -> Picture {
        if channels == self.channels {
            return self.clone();
        }
        let n = self.width * self.height;
        let mut data = Vec::with_capacity(n * channels);
        for i in 0..n {
            let px = &self.data[i * self.channels..(i + 1) * self.channels];
            match (self.channels, channels) {
                (1, 3) => data.extend_from_slice(&[px[0], px[0], px[0]]),
                (3, 1) => data.push(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]),
                (_, c) => data.extend((0..c).map(|k| px[k.min(self.channels - 1)])),
            }
        }
        Picture {
            width: self.width,
            height: self.height,
            channels,
            data,
        }
    }

    /// 8-bit RGB pixels (HWC), for drawing.
    pub fn to_rgb8(&self) -> Vec<u8> {
        let rgb = self.with_channels(3);
        rgb.data
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }
}

/// A label map (class index or instance id per pixel), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u32>,
}

fn check_side(path: &Path, w: u32, h: u32) -> Result<()> {
    check_dimensions(&path.display().to_string(), w, h, None)
}

/// Checks image dimensions read from a header: not empty, at most [`MAX_SIDE`] per side and, when
/// given, at most `max_pixels` pixels. `name` names the image in the error.
pub fn check_dimensions(name: &str, w: u32, h: u32, max_pixels: Option<u64>) -> Result<()> {
    if w == 0 || h == 0 {
        bail!("{name}: empty image ({w}x{h})");
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        bail!("{name}: image is {w}x{h}, larger than the {MAX_SIDE} px limit per side");
    }
    if let Some(m) = max_pixels
        && w as u64 * h as u64 > m
    {
        bail!(
            "{name}: image is {w}x{h} = {} pixels, over the limit of {m}",
            w as u64 * h as u64
        );
    }
    Ok(())
}

/// Width, height, channels, pixels.
type Decoded = (usize, usize, usize, Vec<u8>);

/// JPEGs are decoded with libjpeg (mozjpeg's build of libjpeg-turbo's decoder: islow IDCT,
/// fancy upsampling), giving the same pixels as Pillow and OpenCV, which Rust's pure decoders
/// do not (they differ by up to 4 levels on chroma edges). `None` for non-JPEG files and for
/// colour spaces other than gray / YCbCr / RGB, which fall back to the `image` crate.
fn read_jpeg_like_pillow(bytes: &[u8], name: &str) -> Result<Option<Picture>> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(None);
    }
    // libjpeg fills a truncated scan with grey and only warns; require the end-of-image marker
    // after the last start-of-scan (entropy-coded data never holds a bare 0xFF 0xDA / 0xD9).
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let eoi_after = last_sos.is_some_and(|p| bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if !eoi_after {
        bail!(
            "{}: corrupt or truncated JPEG (no end-of-image marker after the image data)",
            name
        );
    }
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<Decoded>> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        match d.color_space() {
            mozjpeg::ColorSpace::JCS_GRAYSCALE => {
                let mut img = d.grayscale()?;
                let (w, h) = (img.width(), img.height());
                let px: Vec<u8> = img.read_scanlines()?;
                img.finish()?;
                Ok(Some((w, h, 1, px)))
            }
            mozjpeg::ColorSpace::JCS_YCbCr | mozjpeg::ColorSpace::JCS_RGB => {
                let mut img = d.rgb()?;
                let (w, h) = (img.width(), img.height());
                let px: Vec<[u8; 3]> = img.read_scanlines()?;
                img.finish()?;
                Ok(Some((w, h, 3, px.into_iter().flatten().collect())))
            }
            _ => Ok(None),
        }
    });
    match decoded {
        Ok(Ok(Some((w, h, c, px)))) => {
            if px.len() != w * h * c {
                bail!(
                    "{}: corrupt or truncated JPEG ({} of {} bytes decoded)",
                    name,
                    px.len(),
                    w * h * c
                );
            }
            Ok(Some(Picture {
                width: w,
                height: h,
                channels: c,
                data: px.into_iter().map(|v| v as f32 / 255.0).collect(),
            }))
        }
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => bail!("{name}: corrupt or truncated JPEG: {e}"),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            bail!("{name}: corrupt or truncated JPEG: {msg}")
        }
    }
}

/// Reads an image (PNG, JPEG, TIFF; gray, gray+alpha, RGB or RGBA; 8 or 16 bit).
pub fn read_image(path: &Path) -> Result<Picture> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot open image", path.display()))?;
    decode_image(&bytes, &path.display().to_string(), None)
}

/// Decodes an image held in memory, as [`read_image`] does a file. The dimensions are read from
/// the header and checked (per side, and against `max_pixels` when given) before any pixel is
/// decoded, so a small file that claims a huge image costs nothing. `name` names it in errors.
pub fn decode_image(bytes: &[u8], name: &str, max_pixels: Option<u64>) -> Result<Picture> {
    let reader = || {
        let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .with_context(|| format!("{name}: cannot read image"))?;
        // BigTIFF's magic number (43 instead of 42) is not in the format guesser's table.
        if r.format().is_none() && (bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+")) {
            r.set_format(image::ImageFormat::Tiff);
        }
        anyhow::Ok(r)
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("{name}: not a readable image: {e}"))?;
    check_dimensions(name, w, h, max_pixels)?;
    if let Some(p) = read_jpeg_like_pillow(bytes, name)? {
        return Ok(p);
    }
    let img = reader()?
        .decode()
        .map_err(|e| anyhow::anyhow!("{name}: corrupt or truncated image: {e}"))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    use image::DynamicImage as D;
    let (channels, data): (usize, Vec<f32>) = match img {
        D::ImageLuma8(b) => (
            1,
            b.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
        ),
        D::ImageLumaA8(b) => (
            1,
            b.into_raw()
                .chunks(2)
                .map(|p| p[0] as f32 / 255.0)
                .collect(),
        ),
        D::ImageLuma16(b) => (
            1,
            b.into_raw()
                .into_iter()
                .map(|v| v as f32 / 65535.0)
                .collect(),
        ),
        D::ImageLumaA16(b) => (
            1,
            b.into_raw()
                .chunks(2)
                .map(|p| p[0] as f32 / 65535.0)
                .collect(),
        ),
        D::ImageRgb8(b) => (
            3,
            b.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
        ),
        D::ImageRgba8(b) => (
            3,
            b.into_raw()
                .chunks(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .map(|v| v as f32 / 255.0)
                .collect(),
        ),
        other => (3, other.to_rgb32f().into_raw()),
    };
    Ok(Picture {
        width,
        height,
        channels,
        data,
    })
}

/// Reads a label mask: 8/16-bit grayscale or palette PNG (class = stored index, the palette is
/// not applied), or a grayscale TIFF. RGB masks are accepted only when R == G == B everywhere.
pub fn read_mask(path: &Path) -> Result<LabelMap> {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        return read_png_mask(path);
    }
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open mask", path.display()))?
        .with_guessed_format()?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: corrupt or unsupported mask: {e}", path.display()))?;
    check_side(path, img.width(), img.height())?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    use image::DynamicImage as D;
    let data: Vec<u32> = match img {
        D::ImageLuma8(b) => b.into_raw().into_iter().map(u32::from).collect(),
        D::ImageLuma16(b) => b.into_raw().into_iter().map(u32::from).collect(),
        D::ImageRgb8(b) => gray_from_rgb(path, &b.into_raw(), 3)?,
        D::ImageRgba8(b) => gray_from_rgb(path, &b.into_raw(), 4)?,
        D::ImageRgb32F(b) => float_labels(
            path,
            &b.into_raw().chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
        )?,
        other => bail!(
            "{}: unsupported mask pixel format {:?}",
            path.display(),
            other.color()
        ),
    };
    Ok(LabelMap {
        width,
        height,
        data,
    })
}

fn float_labels(path: &Path, v: &[f32]) -> Result<Vec<u32>> {
    v.iter()
        .map(|&x| {
            if x >= 0.0 && x.fract() == 0.0 && x < u32::MAX as f32 {
                Ok(x as u32)
            } else {
                bail!(
                    "{}: float mask holds a non-integer or negative label {x}",
                    path.display()
                )
            }
        })
        .collect()
}

fn gray_from_rgb(path: &Path, raw: &[u8], stride: usize) -> Result<Vec<u32>> {
    raw.chunks(stride)
        .map(|p| {
            if p[0] == p[1] && p[1] == p[2] {
                Ok(p[0] as u32)
            } else {
                bail!(
                    "{}: colour mask (RGB values differ); save masks as 8-bit index or palette PNGs",
                    path.display()
                )
            }
        })
        .collect()
}

fn read_png_mask(path: &Path) -> Result<LabelMap> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open mask", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| anyhow::anyhow!("{}: not a readable PNG: {e}", path.display()))?;
    let info = reader.info();
    check_side(path, info.width, info.height)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let (color, depth) = (info.color_type, info.bit_depth);
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| anyhow::anyhow!("{}: PNG too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or truncated PNG: {e}", path.display()))?;
    let line = out.line_size;
    use png::{BitDepth as B, ColorType as C};
    let samples_per_px = match color {
        C::Grayscale | C::Indexed => 1,
        C::GrayscaleAlpha => 2,
        C::Rgb => 3,
        C::Rgba => 4,
    };
    let mut data = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &buf[y * line..(y + 1) * line];
        for x in 0..width {
            let sample = |k: usize| -> u32 {
                let idx = x * samples_per_px + k;
                match depth {
                    B::Eight => row[idx] as u32,
                    B::Sixteen => u16::from_be_bytes([row[2 * idx], row[2 * idx + 1]]) as u32,
                    d => {
                        let bits = d as usize;
                        let bit = idx * bits;
                        let byte = row[bit / 8];
                        let shift = 8 - bits - (bit % 8);
                        ((byte >> shift) & ((1u8 << bits) - 1)) as u32
                    }
                }
            };
            let v = match color {
                C::Grayscale | C::Indexed | C::GrayscaleAlpha => sample(0),
                C::Rgb | C::Rgba => {
                    let (r, g, b) = (sample(0), sample(1), sample(2));
                    if r != g || g != b {
                        bail!(
                            "{}: colour mask at ({x}, {y}) (RGB values differ); save masks as 8-bit index or palette PNGs",
                            path.display()
                        );
                    }
                    r
                }
            };
            data.push(v);
        }
    }
    Ok(LabelMap {
        width,
        height,
        data,
    })
}

/// Writes a label map as a grayscale PNG (8-bit when every value < 256, else 16-bit).
pub fn write_label_png(path: &Path, labels: &LabelMap) -> Result<()> {
    let bytes = encode_label_png(labels).with_context(|| format!("{}", path.display()))?;
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))
}

/// A label map as grayscale PNG bytes (8-bit when every value < 256, else 16-bit).
pub fn encode_label_png(labels: &LabelMap) -> Result<Vec<u8>> {
    let max = labels.data.iter().copied().max().unwrap_or(0);
    if max > u16::MAX as u32 {
        bail!("label {max} does not fit a 16-bit PNG");
    }
    if max < 256 {
        let px: Vec<u8> = labels.data.iter().map(|&v| v as u8).collect();
        encode_png_depth(labels.width, labels.height, 1, png::BitDepth::Eight, &px)
    } else {
        let px: Vec<u8> = labels
            .data
            .iter()
            .flat_map(|&v| (v as u16).to_be_bytes())
            .collect();
        encode_png_depth(labels.width, labels.height, 1, png::BitDepth::Sixteen, &px)
    }
}

/// Writes 8-bit pixels (1, 3 or 4 channels, HWC) as a PNG.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<()> {
    let bytes = encode_png(width, height, channels, pixels)
        .with_context(|| format!("{}", path.display()))?;
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))
}

/// 8-bit pixels (1, 3 or 4 channels, HWC) as PNG bytes.
pub fn encode_png(width: usize, height: usize, channels: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    encode_png_depth(width, height, channels, png::BitDepth::Eight, pixels)
}

fn encode_png_depth(
    width: usize,
    height: usize,
    channels: usize,
    depth: png::BitDepth,
    pixels: &[u8],
) -> Result<Vec<u8>> {
    let bytes_per = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    if pixels.len() != width * height * channels * bytes_per {
        bail!(
            "{} bytes for a {width}x{height}x{channels} PNG",
            pixels.len()
        );
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
    enc.set_color(match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => bail!("cannot write a {c}-channel PNG"),
    });
    enc.set_depth(depth);
    let mut writer = enc.write_header().context("PNG header")?;
    writer.write_image_data(pixels).context("PNG data")?;
    writer.finish().context("PNG finish")?;
    Ok(out)
}

/// Writes a palette PNG: class index per pixel, coloured by `palette` (RGB triples).
pub fn write_palette_png(path: &Path, labels: &LabelMap, palette: &[[u8; 3]]) -> Result<()> {
    let max = labels.data.iter().copied().max().unwrap_or(0);
    if max as usize >= palette.len().min(256) {
        bail!("{}: label {max} has no palette entry", path.display());
    }
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, labels.width as u32, labels.height as u32);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        let pal: Vec<u8> = palette.iter().take(256).flatten().copied().collect();
        enc.set_palette(pal);
        let mut writer = enc
            .write_header()
            .with_context(|| format!("{}: PNG header", path.display()))?;
        let bytes: Vec<u8> = labels.data.iter().map(|&v| v as u8).collect();
        writer
            .write_image_data(&bytes)
            .with_context(|| format!("{}: PNG data", path.display()))?;
        writer
            .finish()
            .with_context(|| format!("{}: PNG finish", path.display()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_png_round_trip_8_and_16_bit() {
        let dir = std::env::temp_dir().join(format!("segrs-io-{}", std::process::id()));
        for max in [7u32, 300] {
            let lm = LabelMap {
                width: 5,
                height: 3,
                data: (0..15).map(|i| i * max / 14).collect(),
            };
            let p = dir.join(format!("m{max}.png"));
            write_label_png(&p, &lm).unwrap();
            assert_eq!(read_mask(&p).unwrap(), lm);
        }
        let lm = LabelMap {
            width: 4,
            height: 2,
            data: vec![0, 1, 2, 3, 3, 2, 1, 0],
        };
        let p = dir.join("pal.png");
        write_palette_png(&p, &lm, &[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]).unwrap();
        assert_eq!(
            read_mask(&p).unwrap(),
            lm,
            "palette PNG must give indices, not colours"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_png_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("segrs-io-t{}", std::process::id()));
        let lm = LabelMap {
            width: 64,
            height: 64,
            data: vec![1; 64 * 64],
        };
        let p = dir.join("t.png");
        write_label_png(&p, &lm).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = format!("{:#}", read_mask(&p).unwrap_err());
        assert!(err.contains("t.png"), "{err}");
        let err = format!("{:#}", read_image(&p).unwrap_err());
        assert!(err.contains("t.png"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
