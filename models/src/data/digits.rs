//! The UCI 8x8 handwritten digits, shipped with the crate.
//!
//! 1,797 grey-scale images of 8x8 pixels with values `0..=16`, classes 0 to 9 (E. Alpaydin and
//! C. Kaynak, 1998, CC BY 4.0; see `models/data/digits/README.md` for the attribution and
//! `DESCR.rst` for the description). The compressed CSV is embedded in the binary, so loading
//! works from any working directory and needs no download.

use super::classification::ClassificationData;
use flate2::read::GzDecoder;
use std::io::Read;

/// The gzip'd CSV: one image a line, 64 pixels then the label, comma separated.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits/digits.csv.gz");

/// Number of images.
pub const DIGITS_LEN: usize = 1797;
/// Image height and width in pixels.
pub const DIGITS_SIDE: usize = 8;
/// Number of classes.
pub const DIGITS_CLASSES: usize = 10;
/// Largest pixel value in the CSV; pixels are divided by it.
pub const DIGITS_MAX_PIXEL: f32 = 16.0;
/// Share of the images in the training set of [`digits_split`].
pub const DIGITS_TRAIN_FRACTION: f64 = 0.8;

/// The 1,797 digits in the order of the CSV, pixels divided by 16.
///
/// # Panics
///
/// Never for the embedded data, which the tests check; a panic would mean a corrupted build.
pub fn load_digits() -> ClassificationData {
    // The CSV ships gzip'd (57 KB instead of 260 KB); flate2 inflates it in pure Rust.
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .expect("the embedded digits.csv.gz is valid gzip'd UTF-8");
    parse_digits_csv(&text).expect("the embedded digits CSV parses")
}

/// The digits shuffled with `seed` and split 80/20 into `(train, test)` (1,438 and 359 images).
pub fn digits_split(seed: u64) -> (ClassificationData, ClassificationData) {
    load_digits().split(DIGITS_TRAIN_FRACTION, seed)
}

/// Parses digits CSV text: each non-empty line holds 64 pixels in `0..=16` then a label in
/// `0..=9` (integers, or numbers such as `3.0` with no fraction).
///
/// Errors name the line (counted from 1) and the problem.
pub fn parse_digits_csv(text: &str) -> Result<ClassificationData, String> {
    let pixels = DIGITS_SIDE * DIGITS_SIDE;
    let mut images = Vec::with_capacity(DIGITS_LEN * pixels);
    let mut labels = Vec::with_capacity(DIGITS_LEN);
    for (line_no, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != pixels + 1 {
            return Err(format!(
                "digits CSV line {line_no}: {} fields, expected {} pixels and a label",
                fields.len(),
                pixels
            ));
        }
        for (col, field) in fields[..pixels].iter().enumerate() {
            let value = parse_integral(field, 16)
                .map_err(|e| format!("digits CSV line {line_no}, pixel {col}: {e}"))?;
            images.push(value as f32 / DIGITS_MAX_PIXEL);
        }
        let label = parse_integral(fields[pixels], DIGITS_CLASSES as u32 - 1)
            .map_err(|e| format!("digits CSV line {line_no}, label: {e}"))?;
        labels.push(label as u8);
    }
    ClassificationData::new(images, labels, DIGITS_SIDE, DIGITS_SIDE)
}

/// A whole number in `0..=max`, written as an integer or a float with no fraction.
fn parse_integral(field: &str, max: u32) -> Result<u32, String> {
    let field = field.trim();
    let value: f64 = field
        .parse()
        .map_err(|_| format!("`{field}` is not a number"))?;
    if value.fract() != 0.0 || !(0.0..=f64::from(max)).contains(&value) {
        return Err(format!("`{field}` is not a whole number in 0..={max}"));
    }
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_rows() {
        let row = |label: &str| format!("{}{label}\n", "0,".repeat(64));
        assert!(parse_digits_csv(&row("3")).is_ok());
        assert!(parse_digits_csv(&row("3.0")).is_ok());
        let err = parse_digits_csv(&row("12")).unwrap_err();
        assert!(err.contains("line 1, label"), "{err}");
        let err = parse_digits_csv("1,2,3\n").unwrap_err();
        assert!(err.contains("3 fields"), "{err}");
        let err = parse_digits_csv(&format!("{}17,0\n", "0,".repeat(63))).unwrap_err();
        assert!(err.contains("pixel 63"), "{err}");
    }
}
