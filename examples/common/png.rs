//! A minimal grey-scale PNG writer for the examples (included with `#[path]`): one IDAT chunk,
//! zlib via flate2 (already a dependency of firebox-models), CRC-32 from flate2.

use std::io::Write;
use std::path::Path;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Writes `pixels` (row-major, `width × height`, 0 = black, 255 = white) as an 8-bit grey PNG,
/// atomically (a temporary file renamed into place).
pub fn write_grey_png(
    path: &Path,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> std::io::Result<()> {
    assert_eq!(
        pixels.len(),
        width * height,
        "pixel count vs {width}x{height}"
    );
    let mut raw = Vec::with_capacity((width + 1) * height);
    for row in pixels.chunks(width) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit, greyscale, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}
