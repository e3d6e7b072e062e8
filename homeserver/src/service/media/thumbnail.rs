//! Thumbnail making: decoding within fixed bounds, choosing the resize, encoding.
//!
//! Runs on the blocking pool (the caller limits how many at once, and decodes one image at a
//! time). Every source is checked from its header alone before a pixel is decoded: more than
//! [`MAX_SOURCE_SIDE`] on a side, more than [`MAX_SOURCE_PIXELS`] pixels or a decoded buffer
//! over [`MAX_DECODE_BYTES`] is 413 `M_TOO_LARGE` with the figures in the message, and the
//! decoder is given the same limits, so hostile input (a small file declaring a huge image)
//! can neither exhaust memory nor, being malformed, do more than fail with `M_NOT_FOUND`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::content::io_error;
use super::{Method, ThumbnailRequest};
use crate::error::{Error, ErrorCode, Result};

/// Largest source image thumbnailed, in pixels. 25 Mpx holds a 24 Mpx phone photo; whether
/// it is decoded depends on [`MAX_DECODE_BYTES`] too.
const MAX_SOURCE_PIXELS: u64 = 25_000_000;
/// Largest source side, checked by the decoder from the header alone.
const MAX_SOURCE_SIDE: u32 = 16_384;
/// Most memory one decode may allocate (the image buffer included), checked from the header
/// against the decoded size (pixels × bytes per pixel), not the file size: a 97 KB PNG can
/// declare a 100 MB RGBA image. 64 MiB holds a 16 Mpx RGBA or 22 Mpx RGB image (a 12 Mpx
/// phone photo decodes to 36 MB); with two decodes at once thumbnailing stays under 128 MiB.
const MAX_DECODE_BYTES: u64 = 64 * 1024 * 1024;
/// JPEG thumbnails' quality: small files, no visible blocking at thumbnail sizes.
const JPEG_QUALITY: u8 = 80;

/// `M_NOT_FOUND`: the content is not an image we can read, so it has no thumbnail.
pub fn not_thumbnailable() -> Error {
    Error::not_found("No thumbnail can be made of this content")
}

/// `M_TOO_LARGE` (413), the spec's answer for images too large to thumbnail.
fn too_large_to_thumbnail() -> Error {
    Error::new(ErrorCode::TooLarge, "The image is too large to thumbnail")
}

/// [`too_large_to_thumbnail`] saying which bound the header broke.
fn too_large_with_reason(width: u32, height: u32, decoded: u64) -> Error {
    const MIB: u64 = 1024 * 1024;
    Error::new(
        ErrorCode::TooLarge,
        format!(
            "The image is too large to thumbnail: {width}x{height} pixels decode to {} MiB; \
             the limits are {} Mpx and {} MiB",
            decoded.div_ceil(MIB),
            MAX_SOURCE_PIXELS / 1_000_000,
            MAX_DECODE_BYTES / MIB
        ),
    )
}

/// What thumbnailing produced.
#[derive(Debug)]
pub enum Thumbnail {
    /// The source is already small enough and safe to serve as a thumbnail.
    Source {
        /// `image/png` or `image/jpeg`, from the bytes.
        content_type: &'static str,
    },
    /// Freshly encoded bytes.
    Encoded {
        /// The thumbnail.
        bytes: Vec<u8>,
        /// `image/png` or `image/jpeg`.
        content_type: &'static str,
    },
}

/// How to turn a source of a given size into the requested thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// No resizing needed: the source is no larger than asked for.
    Original,
    /// Resize to exactly this size (the source's aspect).
    Scale { width: u32, height: u32 },
    /// Cut this region out, then resize it to the output size (never larger than the region).
    Crop {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        out_width: u32,
        out_height: u32,
    },
}

/// `a * b / c`, rounded, in `1..=cap`.
fn scale_side(a: u64, b: u64, c: u64, cap: u64) -> u32 {
    let value = (a * b + c / 2) / c.max(1);
    u32::try_from(value.clamp(1, cap.max(1))).unwrap_or(u32::MAX)
}

/// Chooses the resizing for a source of `src_w`×`src_h` (oriented as displayed).
///
/// `scale` fits the source inside the requested box, keeping its aspect (as Synapse and
/// Conduit do); `crop` returns exactly the requested size, the largest centred region of the
/// requested aspect scaled down. Neither ever upscales: a source smaller than the box is served
/// as it is (`scale`), or cropped to the requested aspect at its own resolution (`crop`).
fn plan(src_w: u32, src_h: u32, request: ThumbnailRequest) -> Plan {
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    let (w, h) = (u64::from(request.width), u64::from(request.height));
    match request.method {
        Method::Scale => {
            if sw <= w && sh <= h {
                return Plan::Original;
            }
            if sw * h >= sh * w {
                Plan::Scale {
                    width: request.width,
                    height: scale_side(sh, w, sw, sh),
                }
            } else {
                Plan::Scale {
                    width: scale_side(sw, h, sh, sw),
                    height: request.height,
                }
            }
        }
        Method::Crop => {
            let (rw, rh) = if sw * h >= sh * w {
                (u64::from(scale_side(sh, w, h, sw)), sh)
            } else {
                (sw, u64::from(scale_side(sw, h, w, sh)))
            };
            let (ow, oh) = if rw >= w && rh >= h { (w, h) } else { (rw, rh) };
            if (rw, rh) == (sw, sh) && (ow, oh) == (sw, sh) {
                return Plan::Original;
            }
            let side = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            Plan::Crop {
                x: side((sw - rw) / 2),
                y: side((sh - rh) / 2),
                width: side(rw),
                height: side(rh),
                out_width: side(ow),
                out_height: side(oh),
            }
        }
    }
}

/// Maps a decoder failure: over a limit is `M_TOO_LARGE`, anything else (not an image, a
/// corrupt one) means there is no thumbnail to be had.
fn image_error(err: ImageError) -> Error {
    match err {
        ImageError::Limits(_) => too_large_to_thumbnail(),
        // The source is a local file that just opened: a read error here is a truncated or
        // corrupt image (decoders report an early end of data as I/O), not a broken disk.
        other => {
            tracing::debug!(error = %other, "cannot thumbnail");
            not_thumbnailable()
        }
    }
}

fn mime(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        _ => "image/png",
    }
}

/// Decodes (within bounds), resizes and encodes one thumbnail. Runs on the blocking pool.
pub fn make_thumbnail(path: &Path, request: ThumbnailRequest) -> Result<Thumbnail> {
    let file = File::open(path).map_err(io_error("opening a thumbnail source"))?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io_error("reading a thumbnail source"))?;
    let format = match reader.format() {
        Some(
            format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP),
        ) => format,
        _ => return Err(not_thumbnailable()),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    let decoded = decoder.total_bytes();
    if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS || decoded > MAX_DECODE_BYTES {
        return Err(too_large_with_reason(width, height, decoded));
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (width, height) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    let plan = plan(width, height, request);
    if plan == Plan::Original && matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Ok(Thumbnail::Source {
            content_type: mime(format),
        });
    }
    let mut image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    image.apply_orientation(orientation);
    let image = match plan {
        Plan::Original => image,
        Plan::Scale { width, height } => image.thumbnail_exact(width, height),
        Plan::Crop {
            x,
            y,
            width,
            height,
            out_width,
            out_height,
        } => {
            let region = image.crop_imm(x, y, width, height);
            if (out_width, out_height) == (width, height) {
                region
            } else {
                region.thumbnail_exact(out_width, out_height)
            }
        }
    };
    encode(&image, format)
}

/// JPEG sources give JPEG thumbnails (photos stay small); the rest give PNG (transparency
/// kept). Animated sources give their first frame.
fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Thumbnail> {
    let mut bytes = Vec::new();
    let encoded = if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))
    } else if matches!(image.color(), ColorType::Rgb32F | ColorType::Rgba32F) {
        DynamicImage::ImageRgba8(image.to_rgba8()).write_with_encoder(PngEncoder::new(&mut bytes))
    } else {
        image.write_with_encoder(PngEncoder::new(&mut bytes))
    };
    encoded.map_err(|err| Error::internal(format!("encoding a thumbnail: {err}")))?;
    Ok(Thumbnail::Encoded {
        bytes,
        content_type: mime(format),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(width: u32, height: u32, method: Method) -> ThumbnailRequest {
        ThumbnailRequest {
            width,
            height,
            method,
        }
    }

    #[test]
    fn plans_follow_the_spec_and_never_upscale() {
        let check = |src: (u32, u32), req: ThumbnailRequest, want: Plan| {
            assert_eq!(plan(src.0, src.1, req), want, "{src:?} {req:?}");
        };
        use Method::{Crop, Scale};
        // Scale fits inside the box, aspect kept.
        check(
            (1000, 500),
            request(320, 240, Scale),
            Plan::Scale {
                width: 320,
                height: 160,
            },
        );
        check(
            (500, 1000),
            request(320, 240, Scale),
            Plan::Scale {
                width: 120,
                height: 240,
            },
        );
        // Already inside the box: the original.
        check((200, 100), request(320, 240, Scale), Plan::Original);
        check((320, 240), request(320, 240, Scale), Plan::Original);
        // Crop: exactly the requested size from the centred region of its aspect.
        check(
            (1000, 500),
            request(96, 96, Crop),
            Plan::Crop {
                x: 250,
                y: 0,
                width: 500,
                height: 500,
                out_width: 96,
                out_height: 96,
            },
        );
        check(
            (400, 1000),
            request(200, 100, Crop),
            Plan::Crop {
                x: 0,
                y: 400,
                width: 400,
                height: 200,
                out_width: 200,
                out_height: 100,
            },
        );
        // Source smaller than asked: cropped to the aspect, not scaled up.
        check(
            (50, 200),
            request(96, 96, Crop),
            Plan::Crop {
                x: 0,
                y: 75,
                width: 50,
                height: 50,
                out_width: 50,
                out_height: 50,
            },
        );
        check((64, 64), request(96, 96, Crop), Plan::Original);
        // Extreme aspects still give at least one pixel.
        check(
            (10_000, 1),
            request(32, 32, Scale),
            Plan::Scale {
                width: 32,
                height: 1,
            },
        );
    }
}
