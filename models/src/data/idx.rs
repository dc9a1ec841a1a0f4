//! MNIST's IDX file format, plain or gzip'd.
//!
//! An IDX file is a big-endian header (`0x00 0x00`, a type byte, the number of dimensions, then
//! each dimension as a `u32`) followed by the data. MNIST uses unsigned bytes (type `0x08`):
//! images are `idx3-ubyte` files (magic `0x00000803`, dimensions `[n, rows, cols]`) and labels
//! `idx1-ubyte` files (magic `0x00000801`, dimension `[n]`).
//!
//! [`load_mnist`] reads the four files of the standard distribution from a directory.

use super::classification::ClassificationData;
use flate2::read::GzDecoder;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Magic number of an unsigned-byte IDX file with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte IDX file with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Base names of MNIST's training images and labels, test images and labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// What went wrong reading IDX data. Each message names the file.
#[derive(Debug)]
pub enum IdxError {
    /// The directory to load from does not exist (or is not a directory).
    MissingDir {
        /// The directory.
        path: PathBuf,
    },
    /// No file at the path, nor at its variants (`.gz`, `.` instead of `-` before `idx`).
    Missing {
        /// The path looked for first.
        path: PathBuf,
    },
    /// The file exists but could not be read or decompressed.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header does not start with the expected magic number.
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number expected.
        expected: u32,
        /// The first four bytes found (fewer bytes count as missing ones).
        found: u32,
    },
    /// The file is shorter than its header says.
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header announces, header included.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The image and label files disagree on the number of examples.
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::MissingDir { path } => {
                write!(f, "MNIST directory {} does not exist", path.display())
            }
            IdxError::Missing { path } => write!(
                f,
                "missing IDX file {} (also looked for it with `.gz` and with `.idx` in place of \
                 `-idx`)",
                path.display()
            ),
            IdxError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            IdxError::BadMagic {
                path,
                expected,
                found,
            } => write!(
                f,
                "bad magic number in {}: expected {expected:#010x}, found {found:#010x}",
                path.display()
            ),
            IdxError::Truncated {
                path,
                expected,
                found,
            } => write!(
                f,
                "truncated IDX file {}: header announces {expected} bytes, found {found}",
                path.display()
            ),
            IdxError::CountMismatch {
                images,
                n_images,
                labels,
                n_labels,
            } => write!(
                f,
                "{} holds {n_images} images but {} holds {n_labels} labels",
                images.display(),
                labels.display()
            ),
        }
    }
}

impl std::error::Error for IdxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdxError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The content of an `idx3-ubyte` image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// `n * height * width` pixels, row-major, image after image.
    pub pixels: Vec<u8>,
}

/// Parses `idx3-ubyte` bytes; `path` only names the source in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, IdxError> {
    let dims = parse_header(bytes, IMAGES_MAGIC, 3, path)?;
    let (n, height, width) = (dims[0], dims[1], dims[2]);
    let data = body(bytes, 16, n * height * width, path)?;
    Ok(IdxImages {
        n,
        height,
        width,
        pixels: data.to_vec(),
    })
}

/// Parses `idx1-ubyte` bytes into labels; `path` only names the source in errors.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, IdxError> {
    let dims = parse_header(bytes, LABELS_MAGIC, 1, path)?;
    Ok(body(bytes, 8, dims[0], path)?.to_vec())
}

/// Encodes images as `idx3-ubyte` bytes (the inverse of [`parse_images`]).
///
/// # Panics
///
/// If `pixels` does not hold `n * height * width` bytes or a dimension exceeds `u32`.
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    assert_eq!(
        images.pixels.len(),
        images.n * images.height * images.width,
        "pixel count does not match the dimensions"
    );
    let mut out = header(IMAGES_MAGIC, &[images.n, images.height, images.width]);
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as `idx1-ubyte` bytes (the inverse of [`parse_labels`]).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = header(LABELS_MAGIC, &[labels.len()]);
    out.extend_from_slice(labels);
    out
}

/// Reads a file, inflating it when its name ends in `.gz`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    if !path.is_file() {
        return Err(IdxError::Missing {
            path: path.to_path_buf(),
        });
    }
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if path.extension().is_some_and(|ext| ext == "gz") {
        // MNIST is usually distributed gzip'd; flate2 inflates it in pure Rust.
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an image file and a label file into a [`ClassificationData`], pixels divided by 255.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ClassificationData, IdxError> {
    let parsed = parse_images(&read_maybe_gz(images)?, images)?;
    let label_values = parse_labels(&read_maybe_gz(labels)?, labels)?;
    if parsed.n != label_values.len() {
        return Err(IdxError::CountMismatch {
            images: images.to_path_buf(),
            n_images: parsed.n,
            labels: labels.to_path_buf(),
            n_labels: label_values.len(),
        });
    }
    let pixels = parsed
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Ok(
        ClassificationData::new(pixels, label_values, parsed.height, parsed.width)
            .expect("IDX dimensions were checked against the data"),
    )
}

/// MNIST's training and test sets.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// The 60,000 training images (or as many as the files hold).
    pub train: ClassificationData,
    /// The 10,000 test images (or as many as the files hold).
    pub test: ClassificationData,
}

/// Loads MNIST from `dir`, which holds the four files named in [`MNIST_FILES`], each plain or
/// gzip'd (`.gz`), and with `-idx` or `.idx` before the type (both spellings circulate).
pub fn load_mnist(dir: &Path) -> Result<Mnist, IdxError> {
    if !dir.is_dir() {
        return Err(IdxError::MissingDir {
            path: dir.to_path_buf(),
        });
    }
    let [train_images, train_labels, test_images, test_labels] =
        MNIST_FILES.map(|name| find_file(dir, name));
    Ok(Mnist {
        train: load_idx_pair(&train_images, &train_labels)?,
        test: load_idx_pair(&test_images, &test_labels)?,
    })
}

/// The first existing file among `name`, `name.gz` and their `.idx` spellings, or `dir/name`
/// when none exists (reading it then reports it missing).
fn find_file(dir: &Path, name: &str) -> PathBuf {
    let dotted = name.replacen("-idx", ".idx", 1);
    [
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .iter()
    .map(|candidate| dir.join(candidate))
    .find(|path| path.is_file())
    .unwrap_or_else(|| dir.join(name))
}

fn header(magic: u32, dims: &[usize]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d).expect("IDX dimensions fit in u32");
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

fn parse_header(
    bytes: &[u8],
    magic: u32,
    n_dims: usize,
    path: &Path,
) -> Result<Vec<usize>, IdxError> {
    let mut word = [0u8; 4];
    let present = bytes.len().min(4);
    word[..present].copy_from_slice(&bytes[..present]);
    let found = u32::from_be_bytes(word);
    if present < 4 || found != magic {
        return Err(IdxError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
        });
    }
    let header_len = 4 + 4 * n_dims;
    if bytes.len() < header_len {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected: header_len,
            found: bytes.len(),
        });
    }
    Ok((0..n_dims)
        .map(|d| {
            let at = 4 + 4 * d;
            u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
        })
        .collect())
}

fn body<'a>(
    bytes: &'a [u8],
    header_len: usize,
    len: usize,
    path: &Path,
) -> Result<&'a [u8], IdxError> {
    let expected = header_len + len;
    if bytes.len() < expected {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: bytes.len(),
        });
    }
    Ok(&bytes[header_len..expected])
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "firebox-idx-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tiny_images(n: usize) -> IdxImages {
        IdxImages {
            n,
            height: 2,
            width: 3,
            pixels: (0..n * 6).map(|v| (v * 17 % 256) as u8).collect(),
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        if path.extension().is_some_and(|e| e == "gz") {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(bytes).unwrap();
            std::fs::write(path, encoder.finish().unwrap()).unwrap();
        } else {
            std::fs::write(path, bytes).unwrap();
        }
    }

    /// Writes a 4-image training pair and a 2-image test pair; `gz` picks compression.
    fn write_mnist(dir: &Path, gz: bool) {
        let suffix = if gz { ".gz" } else { "" };
        let file = |i: usize| dir.join(format!("{}{suffix}", MNIST_FILES[i]));
        write(&file(0), &encode_images(&tiny_images(4)));
        write(&file(1), &encode_labels(&[0, 1, 2, 9]));
        write(&file(2), &encode_images(&tiny_images(2)));
        write(&file(3), &encode_labels(&[7, 3]));
    }

    #[test]
    fn round_trip_in_memory() {
        let images = tiny_images(5);
        let bytes = encode_images(&images);
        assert_eq!(&bytes[..4], &[0, 0, 8, 3]);
        assert_eq!(parse_images(&bytes, Path::new("x")).unwrap(), images);
        let labels = encode_labels(&[4, 2]);
        assert_eq!(&labels[..8], &[0, 0, 8, 1, 0, 0, 0, 2]);
        assert_eq!(parse_labels(&labels, Path::new("y")).unwrap(), vec![4, 2]);
    }

    #[test]
    fn load_mnist_plain_and_gz() {
        for gz in [false, true] {
            let dir = TempDir::new();
            write_mnist(&dir.0, gz);
            let mnist = load_mnist(&dir.0).unwrap();
            assert_eq!((mnist.train.len(), mnist.test.len()), (4, 2));
            assert_eq!((mnist.train.height, mnist.train.width), (2, 3));
            assert_eq!(mnist.train.labels, vec![0, 1, 2, 9]);
            assert_eq!(mnist.test.labels, vec![7, 3]);
            let expected: Vec<f32> = tiny_images(4)
                .pixels
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            assert_eq!(mnist.train.images, expected);
        }
    }

    #[test]
    fn dotted_names_are_found() {
        let dir = TempDir::new();
        write_mnist(&dir.0, false);
        for name in MNIST_FILES {
            let dotted = name.replacen("-idx", ".idx", 1);
            std::fs::rename(dir.0.join(name), dir.0.join(dotted)).unwrap();
        }
        assert_eq!(load_mnist(&dir.0).unwrap().train.len(), 4);
    }

    #[test]
    fn missing_file_names_its_path() {
        let dir = TempDir::new();
        write_mnist(&dir.0, false);
        std::fs::remove_file(dir.0.join(MNIST_FILES[3])).unwrap();
        let err = load_mnist(&dir.0).unwrap_err();
        assert!(matches!(err, IdxError::Missing { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("missing IDX file"), "{message}");
        assert!(message.contains(&dir.0.join(MNIST_FILES[3]).display().to_string()));

        let nowhere = dir.0.join("no-such-dir");
        let err = load_mnist(&nowhere).unwrap_err();
        assert!(matches!(err, IdxError::MissingDir { .. }), "{err}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn bad_magic_is_reported() {
        let dir = TempDir::new();
        write_mnist(&dir.0, false);
        // Labels where images belong.
        write(&dir.0.join(MNIST_FILES[0]), &encode_labels(&[1, 2, 3, 4]));
        let message = load_mnist(&dir.0).unwrap_err().to_string();
        assert!(message.contains("bad magic number"), "{message}");
        assert!(
            message.contains("expected 0x00000803, found 0x00000801"),
            "{message}"
        );
        assert!(message.contains(MNIST_FILES[0]), "{message}");

        let err = parse_labels(&[0, 0], Path::new("short")).unwrap_err();
        assert!(matches!(err, IdxError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn truncated_data_is_reported() {
        let bytes = encode_images(&tiny_images(3));
        let err = parse_images(&bytes[..bytes.len() - 1], Path::new("cut")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("truncated IDX file cut"), "{message}");
        assert!(
            message.contains("announces 34 bytes, found 33"),
            "{message}"
        );
        // A header cut inside the dimensions.
        let err = parse_images(&bytes[..9], Path::new("cut")).unwrap_err();
        assert!(
            matches!(err, IdxError::Truncated { expected: 16, .. }),
            "{err}"
        );
        // A corrupt gzip stream is an I/O error naming the file.
        let dir = TempDir::new();
        let path = dir.0.join("broken.gz");
        std::fs::write(&path, b"not gzip").unwrap();
        let message = read_maybe_gz(&path).unwrap_err().to_string();
        assert!(message.starts_with("cannot read"), "{message}");
        assert!(message.contains("broken.gz"), "{message}");
    }

    #[test]
    fn count_mismatch_is_reported() {
        let dir = TempDir::new();
        write_mnist(&dir.0, false);
        write(&dir.0.join(MNIST_FILES[1]), &encode_labels(&[0, 1, 2]));
        let err = load_mnist(&dir.0).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::CountMismatch {
                    n_images: 4,
                    n_labels: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("holds 4 images but"), "{err}");
    }
}
