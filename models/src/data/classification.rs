//! An in-memory image classification data set: grey-scale images and their class labels.

use super::shuffle::permutation;
use burn::data::dataset::{Dataset, DatasetError};

/// Grey-scale images of one size with a class label each, held in memory.
///
/// Pixels are stored row-major, image after image, normalized to `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationData {
    /// `n * height * width` pixels in `0.0..=1.0`, row-major, image after image.
    pub images: Vec<f32>,
    /// The class of each image, `n` of them.
    pub labels: Vec<u8>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of images.
    pub n: usize,
}

/// One image and its label, the item type of the [`Dataset`] implementation.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationItem {
    /// `height * width` pixels in `0.0..=1.0`, row-major.
    pub image: Vec<f32>,
    /// The class.
    pub label: u8,
}

impl ClassificationData {
    /// Builds a data set, checking that there are `height * width` pixels per label.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u8>,
        height: usize,
        width: usize,
    ) -> Result<Self, String> {
        let pixels = height * width;
        if pixels == 0 {
            return Err(format!("empty image size {height}x{width}"));
        }
        if images.len() != labels.len() * pixels {
            return Err(format!(
                "{} pixels do not make {} images of {height}x{width}",
                images.len(),
                labels.len()
            ));
        }
        Ok(Self {
            n: labels.len(),
            images,
            labels,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Pixels per image (`height * width`).
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Number of classes, taken as the largest label plus one (0 for an empty set).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| usize::from(m) + 1)
    }

    /// The pixels of image `index`.
    ///
    /// # Panics
    ///
    /// If `index >= len()`.
    pub fn image(&self, index: usize) -> &[f32] {
        let p = self.pixels();
        &self.images[index * p..(index + 1) * p]
    }

    /// The images at `indices`, in that order.
    ///
    /// # Panics
    ///
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut images = Vec::with_capacity(indices.len() * self.pixels());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Self {
            images,
            labels,
            height: self.height,
            width: self.width,
            n: indices.len(),
        }
    }

    /// The first `count` images (all of them if there are fewer).
    pub fn take(&self, count: usize) -> Self {
        let indices: Vec<usize> = (0..count.min(self.n)).collect();
        self.subset(&indices)
    }

    /// The same images in an order determined by `seed` (see [`super::shuffle`]).
    pub fn shuffled(&self, seed: u64) -> Self {
        self.subset(&permutation(self.n, seed))
    }

    /// Shuffles with `seed`, then splits into a training set holding `train_fraction` of the images
    /// (rounded to the nearest image) and a test set holding the rest.
    ///
    /// The split depends only on the data and the seed, never on the platform.
    ///
    /// # Panics
    ///
    /// If `train_fraction` is not within `0.0..=1.0`.
    pub fn split(&self, train_fraction: f64, seed: u64) -> (Self, Self) {
        assert!(
            (0.0..=1.0).contains(&train_fraction),
            "train fraction {train_fraction} is not within 0..=1"
        );
        let order = permutation(self.n, seed);
        let n_train = (self.n as f64 * train_fraction).round() as usize;
        (
            self.subset(&order[..n_train]),
            self.subset(&order[n_train..]),
        )
    }

    /// How many images each class has, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            counts[usize::from(label)] += 1;
        }
        counts
    }
}

impl Dataset<ClassificationItem> for ClassificationData {
    fn get(&self, index: usize) -> Result<ClassificationItem, DatasetError> {
        assert!(
            index < self.n,
            "Index out of bounds for ClassificationData: {index} >= {}",
            self.n
        );
        Ok(ClassificationItem {
            image: self.image(index).to_vec(),
            label: self.labels[index],
        })
    }

    fn len(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClassificationData {
        let images = (0..10 * 4).map(|v| v as f32 / 40.0).collect();
        let labels = (0..10).map(|i| (i % 3) as u8).collect();
        ClassificationData::new(images, labels, 2, 2).unwrap()
    }

    #[test]
    fn new_checks_sizes() {
        let err = ClassificationData::new(vec![0.0; 7], vec![0, 1], 2, 2).unwrap_err();
        assert!(err.contains("7 pixels"), "{err}");
    }

    #[test]
    fn split_keeps_every_image_once() {
        let data = tiny();
        let (train, test) = data.split(0.8, 3);
        assert_eq!((train.len(), test.len()), (8, 2));
        let mut firsts: Vec<_> = train
            .images
            .chunks(4)
            .chain(test.images.chunks(4))
            .map(|c| (c[0] * 40.0) as usize)
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..10).map(|i| i * 4).collect::<Vec<_>>());
        assert_eq!(train.class_counts().iter().sum::<usize>(), 8);
    }

    #[test]
    fn dataset_items_match_images() {
        let data = tiny();
        let item = Dataset::get(&data, 3).unwrap();
        assert_eq!(item.image, data.image(3));
        assert_eq!(item.label, 0);
    }
}
