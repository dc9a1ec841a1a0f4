//! Turning images and labels into tensors on a device.

use super::classification::{ClassificationData, ClassificationItem};
use super::shuffle::permutation;
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// A batch of images and their classes, on one device.
#[derive(Clone, Debug)]
pub struct ClassificationBatch {
    /// Images, shape `[batch, 1, height, width]`.
    pub images: Tensor<4>,
    /// Classes, shape `[batch]`.
    pub targets: Tensor<1, Int>,
}

impl ClassificationBatch {
    /// Builds a batch from row-major pixels (`batch * height * width` of them) and labels.
    ///
    /// # Panics
    ///
    /// If the number of pixels is not `labels.len() * height * width`.
    pub fn from_parts(
        pixels: Vec<f32>,
        labels: &[u8],
        height: usize,
        width: usize,
        device: &Device,
    ) -> Self {
        let batch = labels.len();
        assert_eq!(
            pixels.len(),
            batch * height * width,
            "pixels do not match {batch} images of {height}x{width}"
        );
        let images = Tensor::from_data(TensorData::new(pixels, [batch, 1, height, width]), device);
        let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        let targets = Tensor::from_data(TensorData::new(labels, [batch]), device);
        Self { images, targets }
    }

    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.targets.dims()[0]
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The images flattened to `[batch, height * width]`, as an MLP takes them.
    pub fn flat_images(&self) -> Tensor<2> {
        self.images.clone().flatten(1, 3)
    }
}

/// Burn [`Batcher`] stacking [`ClassificationItem`]s of one image size into a
/// [`ClassificationBatch`], for Burn's data loaders.
#[derive(Clone, Copy, Debug)]
pub struct ClassificationBatcher {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl ClassificationBatcher {
    /// A batcher for images of `height` x `width` pixels.
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    /// A batcher for the images of `data`.
    pub fn for_data(data: &ClassificationData) -> Self {
        Self::new(data.height, data.width)
    }
}

impl Batcher<ClassificationItem, ClassificationBatch> for ClassificationBatcher {
    fn batch(&self, items: Vec<ClassificationItem>, device: &Device) -> ClassificationBatch {
        let mut pixels = Vec::with_capacity(items.len() * self.height * self.width);
        let mut labels = Vec::with_capacity(items.len());
        for item in items {
            pixels.extend_from_slice(&item.image);
            labels.push(item.label);
        }
        ClassificationBatch::from_parts(pixels, &labels, self.height, self.width, device)
    }
}

impl ClassificationData {
    /// The images at `indices` as one batch on `device`.
    ///
    /// # Panics
    ///
    /// If an index is out of range.
    pub fn batch(&self, indices: &[usize], device: &Device) -> ClassificationBatch {
        let mut pixels = Vec::with_capacity(indices.len() * self.pixels());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ClassificationBatch::from_parts(pixels, &labels, self.height, self.width, device)
    }

    /// Batches of `batch_size` images (the last one may be smaller) on `device`, built lazily.
    ///
    /// With `shuffle_seed`, the images come in the order [`super::shuffle::permutation`] gives
    /// for that seed; without, in storage order.
    ///
    /// # Panics
    ///
    /// If `batch_size` is 0.
    pub fn batches<'a>(
        &'a self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        device: &'a Device,
    ) -> impl ExactSizeIterator<Item = ClassificationBatch> + 'a {
        assert!(batch_size > 0, "batch size must be positive");
        let order = match shuffle_seed {
            Some(seed) => permutation(self.n, seed),
            None => (0..self.n).collect(),
        };
        let count = self.n.div_ceil(batch_size);
        (0..count).map(move |b| {
            let end = ((b + 1) * batch_size).min(order.len());
            self.batch(&order[b * batch_size..end], device)
        })
    }

    /// Number of batches [`batches`](Self::batches) yields for `batch_size`.
    pub fn num_batches(&self, batch_size: usize) -> usize {
        self.n.div_ceil(batch_size.max(1))
    }
}
