//! Images read and label maps written a band of rows at a time, so that an image of any size
//! (a whole-slide scan, a satellite scene) costs memory in proportion to its width, not its
//! area: PNG (8 / 16 bit, non-interlaced) and TIFF (strips or tiles, classic or BigTIFF, 8 / 16
//! bit or float, chunky samples) stream; other formats are decoded whole.

use super::image_io::{Picture, read_image};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

/// Largest side of an image read row by row (memory grows with the width only).
pub const MAX_STREAM_SIDE: usize = 1 << 18;

/// An image read from top to bottom. Pixels are floats in [0, 1], channels interleaved, with
/// 1 or 3 channels (alpha dropped).
pub trait RowSource {
    /// (width, height, channels).
    fn size(&self) -> (usize, usize, usize);
    /// Appends the next `n` rows to `out` (`n * width * channels` values).
    fn read_rows(&mut self, n: usize, out: &mut Vec<f32>) -> Result<()>;

    fn width(&self) -> usize {
        self.size().0
    }
    fn height(&self) -> usize {
        self.size().1
    }
    fn channels(&self) -> usize {
        self.size().2
    }
}

/// Channels kept of `stored` samples per pixel: 1 (gray, gray + alpha) or 3 (RGB, RGBA).
fn kept(stored: usize) -> usize {
    if stored >= 3 { 3 } else { 1 }
}

/// Opens `path` for reading by rows: PNG and TIFF stream, anything else is decoded whole (and
/// held to [`super::image_io::MAX_SIDE`]).
pub fn open_rows(path: &Path) -> Result<Box<dyn RowSource>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let src: Box<dyn RowSource> = match ext.as_str() {
        "png" => PngRows::open(path)?,
        "tif" | "tiff" => Box::new(TiffRows::open(path)?),
        _ => Box::new(PictureRows::new(read_image(path)?)),
    };
    let (w, h) = (src.width(), src.height());
    if w == 0 || h == 0 || w > MAX_STREAM_SIDE || h > MAX_STREAM_SIDE {
        bail!(
            "{}: image is {w}x{h}; sides must be in 1..={MAX_STREAM_SIDE}",
            path.display()
        );
    }
    Ok(src)
}

/// Rows of a decoded picture, owned or borrowed.
pub struct PictureRows<'a> {
    pic: std::borrow::Cow<'a, Picture>,
    next: usize,
}

impl<'a> PictureRows<'a> {
    pub fn new(pic: Picture) -> Self {
        Self {
            pic: std::borrow::Cow::Owned(pic),
            next: 0,
        }
    }

    pub fn borrowed(pic: &'a Picture) -> Self {
        Self {
            pic: std::borrow::Cow::Borrowed(pic),
            next: 0,
        }
    }
}

impl RowSource for PictureRows<'_> {
    fn size(&self) -> (usize, usize, usize) {
        (self.pic.width, self.pic.height, self.pic.channels)
    }
    fn read_rows(&mut self, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let row = self.pic.width * self.pic.channels;
        let end = (self.next + n).min(self.pic.height);
        out.extend_from_slice(&self.pic.data[self.next * row..end * row]);
        self.next = end;
        Ok(())
    }
}

/// Converts one row of samples (`sample(i)` gives sample `i` in [0, 1]) with `stored` channels
/// per pixel to 1 (gray, gray + alpha) or 3 (RGB, RGBA) channels.
fn push_pixels(out: &mut Vec<f32>, width: usize, stored: usize, sample: impl Fn(usize) -> f32) {
    let keep = kept(stored);
    for x in 0..width {
        for c in 0..keep {
            out.push(sample(x * stored + c));
        }
    }
}

/// A PNG decoded row by row.
struct PngRows {
    reader: png::Reader<BufReader<File>>,
    name: String,
    width: usize,
    height: usize,
    stored: usize,
    sixteen: bool,
    next: usize,
}

impl PngRows {
    /// Interlaced PNGs deliver their rows out of order: those are decoded whole.
    fn open(path: &Path) -> Result<Box<dyn RowSource>> {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("{name}: cannot open image"))?;
        let mut decoder =
            png::Decoder::new_with_limits(BufReader::new(file), png::Limits { bytes: 1 << 30 });
        decoder.set_transformations(png::Transformations::EXPAND);
        let reader = decoder
            .read_info()
            .map_err(|e| anyhow::anyhow!("{name}: not a readable PNG: {e}"))?;
        if reader.info().interlaced {
            drop(reader);
            return Ok(Box::new(PictureRows::new(read_image(path)?)));
        }
        let (color, depth) = reader.output_color_type();
        let stored = color.samples();
        let (width, height) = (reader.info().width as usize, reader.info().height as usize);
        Ok(Box::new(PngRows {
            reader,
            name,
            width,
            height,
            stored,
            sixteen: depth == png::BitDepth::Sixteen,
            next: 0,
        }))
    }
}

impl RowSource for PngRows {
    fn size(&self) -> (usize, usize, usize) {
        (self.width, self.height, kept(self.stored))
    }
    fn read_rows(&mut self, n: usize, out: &mut Vec<f32>) -> Result<()> {
        for _ in 0..n.min(self.height - self.next) {
            let row = self
                .reader
                .next_row()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: corrupt or truncated PNG at row {}: {e}",
                        self.name,
                        self.next
                    )
                })?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: PNG ends at row {} of {}",
                        self.name,
                        self.next,
                        self.height
                    )
                })?;
            let data = row.data();
            if self.sixteen {
                push_pixels(out, self.width, self.stored, |i| {
                    u16::from_be_bytes([data[2 * i], data[2 * i + 1]]) as f32 / 65535.0
                });
            } else {
                push_pixels(out, self.width, self.stored, |i| data[i] as f32 / 255.0);
            }
            self.next += 1;
        }
        Ok(())
    }
}

/// A TIFF read a strip or a row of tiles at a time.
pub struct TiffRows {
    decoder: tiff::decoder::Decoder<BufReader<File>>,
    name: String,
    width: usize,
    height: usize,
    stored: usize,
    kind: Sample,
    /// Rows decoded but not yet handed out (HWC, converted).
    pending: Vec<f32>,
    next: usize,
    /// Next row of chunks to decode.
    chunk_row: usize,
}

#[derive(Clone, Copy)]
enum Sample {
    U8,
    U16,
    Float,
}

impl TiffRows {
    pub fn open(path: &Path) -> Result<Self> {
        use tiff::ColorType as C;
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("{name}: cannot open image"))?;
        let bad = |e: tiff::TiffError| anyhow::anyhow!("{name}: not a readable TIFF: {e}");
        let mut decoder = tiff::decoder::Decoder::new(BufReader::new(file)).map_err(bad)?;
        let (w, h) = decoder.dimensions().map_err(bad)?;
        let (stored, bits) = match decoder.colortype().map_err(bad)? {
            C::Gray(b) => (1, b),
            C::GrayA(b) => (2, b),
            C::RGB(b) => (3, b),
            C::RGBA(b) => (4, b),
            other => bail!(
                "{name}: TIFF colour type {other:?} is not supported (gray or RGB, with or without alpha)"
            ),
        };
        let planar = decoder
            .find_tag_unsigned::<u16>(tiff::tags::Tag::PlanarConfiguration)
            .map_err(bad)?
            .unwrap_or(1);
        if planar != 1 && stored > 1 {
            bail!("{name}: planar TIFF samples are not supported (only chunky / contiguous)");
        }
        // One value per sample; they agree in the images read here.
        let format = decoder
            .find_tag_unsigned_vec::<u16>(tiff::tags::Tag::SampleFormat)
            .map_err(bad)?
            .and_then(|v| v.first().copied())
            .unwrap_or(1);
        let kind = match (format, bits) {
            (1, 8) => Sample::U8,
            (1, 16) => Sample::U16,
            (3, 32) | (3, 64) => Sample::Float,
            _ => bail!(
                "{name}: TIFF samples of {bits} bits (format {format}) are not supported (8 or 16 bit unsigned, or float)"
            ),
        };
        Ok(Self {
            decoder,
            name,
            width: w as usize,
            height: h as usize,
            stored,
            kind,
            pending: Vec::new(),
            next: 0,
            chunk_row: 0,
        })
    }

    /// Decodes the next strip, or the next row of tiles, into `pending`.
    fn decode_chunk_row(&mut self) -> Result<()> {
        let (cw, ch) = self.decoder.chunk_dimensions();
        let (cw, ch) = (cw.max(1) as usize, ch.max(1) as usize);
        let tiled = matches!(
            self.decoder.get_chunk_type(),
            tiff::decoder::ChunkType::Tile
        );
        let across = if tiled { self.width.div_ceil(cw) } else { 1 };
        let y0 = self.chunk_row * ch;
        let rows = ch.min(self.height - y0);
        let keep = kept(self.stored);
        let start = self.pending.len();
        self.pending.resize(start + rows * self.width * keep, 0.0);
        for t in 0..across {
            let index = (self.chunk_row * across + t) as u32;
            let data = self.decoder.read_chunk(index).map_err(|e| {
                anyhow::anyhow!(
                    "{}: corrupt or truncated TIFF chunk {index}: {e}",
                    self.name
                )
            })?;
            // The chunk's data without the padding of edge tiles, row-major.
            let (dw, _) = self.decoder.chunk_data_dimensions(index);
            let stride = dw as usize;
            let x0 = t * if tiled { cw } else { 0 };
            let cols = stride.min(self.width - x0);
            let value = |i: usize| -> Option<f32> {
                use tiff::decoder::DecodingResult as D;
                Some(match (&data, self.kind) {
                    (D::U8(v), Sample::U8) => *v.get(i)? as f32 / 255.0,
                    (D::U16(v), Sample::U16) => *v.get(i)? as f32 / 65535.0,
                    (D::F32(v), Sample::Float) => v.get(i)?.clamp(0.0, 1.0),
                    (D::F64(v), Sample::Float) => v.get(i)?.clamp(0.0, 1.0) as f32,
                    _ => return None,
                })
            };
            for r in 0..rows {
                for x in 0..cols {
                    for c in 0..keep {
                        let i = (r * stride + x) * self.stored + c;
                        let v = value(i).ok_or_else(|| {
                            anyhow::anyhow!(
                                "{}: TIFF chunk {index} is shorter than its size says",
                                self.name
                            )
                        })?;
                        self.pending[start + (r * self.width + x0 + x) * keep + c] = v;
                    }
                }
            }
        }
        self.chunk_row += 1;
        Ok(())
    }
}

impl RowSource for TiffRows {
    fn size(&self) -> (usize, usize, usize) {
        (self.width, self.height, kept(self.stored))
    }
    fn read_rows(&mut self, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let row = self.width * self.channels();
        let n = n.min(self.height - self.next);
        while self.pending.len() < n * row {
            self.decode_chunk_row()?;
        }
        out.extend(self.pending.drain(..n * row));
        self.next += n;
        Ok(())
    }
}

/// A grayscale label PNG written row by row (8-bit, or 16-bit when `max_value` > 255).
pub struct LabelRowWriter<W: Write + 'static> {
    stream: png::StreamWriter<'static, W>,
    sixteen: bool,
    width: usize,
    buf: Vec<u8>,
}

impl<W: Write + 'static> LabelRowWriter<W> {
    pub fn new(out: W, width: usize, height: usize, max_value: u32) -> Result<Self> {
        if max_value > u16::MAX as u32 {
            bail!("label {max_value} does not fit a 16-bit PNG");
        }
        let sixteen = max_value > 255;
        let mut enc = png::Encoder::new(out, width as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(if sixteen {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        });
        enc.set_compression(png::Compression::Fast);
        let stream = enc.write_header()?.into_stream_writer()?;
        Ok(Self {
            stream,
            sixteen,
            width,
            buf: Vec::new(),
        })
    }

    /// Writes the next row (`width` values).
    pub fn write_row(&mut self, row: &[u32]) -> Result<()> {
        debug_assert_eq!(row.len(), self.width);
        self.buf.clear();
        if self.sixteen {
            self.buf
                .extend(row.iter().flat_map(|&v| (v as u16).to_be_bytes()));
        } else {
            self.buf.extend(row.iter().map(|&v| v as u8));
        }
        self.stream.write_all(&self.buf)?;
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        self.stream.finish()?;
        Ok(())
    }
}
