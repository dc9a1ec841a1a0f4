//! The shipped digits: counts, ranges, split determinism and batching.

use burn::tensor::Device;
use firebox_models::data::digits::{DIGITS_CLASSES, DIGITS_LEN, DIGITS_SIDE};
use firebox_models::data::{ClassificationBatcher, ClassificationData, digits_split, load_digits};

#[test]
fn loader_counts_labels_and_pixel_range() {
    let digits = load_digits();
    assert_eq!(digits.len(), 1797);
    assert_eq!(digits.len(), DIGITS_LEN);
    assert_eq!((digits.height, digits.width), (DIGITS_SIDE, DIGITS_SIDE));
    assert_eq!(digits.images.len(), 1797 * 64);
    assert_eq!(digits.labels.len(), 1797);
    assert_eq!(digits.num_classes(), DIGITS_CLASSES);
    // Every class is present, about 180 each.
    let counts = digits.class_counts();
    assert_eq!(counts.len(), 10);
    assert!(
        counts.iter().all(|&c| (170..=190).contains(&c)),
        "{counts:?}"
    );
    // Pixels are k/16 for whole k in 0..=16, and both ends occur.
    assert!(
        digits
            .images
            .iter()
            .all(|&p| (0.0..=1.0).contains(&p) && (p * 16.0).fract() == 0.0)
    );
    assert!(digits.images.contains(&0.0));
    assert!(digits.images.contains(&1.0));
    // The first row of the CSV is a 0.
    assert_eq!(digits.labels[0], 0);
    assert_eq!(digits.image(0)[2], 5.0 / 16.0);
}

#[test]
fn split_is_deterministic_and_disjoint() {
    let (train_a, test_a) = digits_split(7);
    let (train_b, test_b) = digits_split(7);
    assert_eq!(train_a, train_b);
    assert_eq!(test_a, test_b);
    assert_eq!((train_a.len(), test_a.len()), (1438, 359));

    let (train_c, _) = digits_split(8);
    assert_ne!(
        train_a.labels, train_c.labels,
        "another seed, another order"
    );

    // Train and test together hold exactly the original images.
    let key = |data: &ClassificationData| -> Vec<Vec<u32>> {
        let mut rows: Vec<Vec<u32>> = (0..data.len())
            .map(|i| {
                let mut row: Vec<u32> = data.image(i).iter().map(|p| (p * 16.0) as u32).collect();
                row.push(u32::from(data.labels[i]));
                row
            })
            .collect();
        rows.sort();
        rows
    };
    let mut joined = train_a.clone();
    joined.images.extend_from_slice(&test_a.images);
    joined.labels.extend_from_slice(&test_a.labels);
    joined.n += test_a.n;
    assert_eq!(key(&joined), key(&load_digits()));
}

#[test]
fn batches_have_the_right_shapes_and_values() {
    let device = Device::flex();
    let (_, test) = digits_split(1);
    let batches: Vec<_> = test.batches(100, None, &device).collect();
    assert_eq!(batches.len(), 4);
    assert_eq!(test.num_batches(100), 4);
    assert_eq!(batches[0].images.dims(), [100, 1, 8, 8]);
    assert_eq!(batches[3].images.dims(), [59, 1, 8, 8]);
    assert_eq!(batches[0].flat_images().dims(), [100, 64]);
    assert_eq!(batches[0].targets.dims(), [100]);
    let labels = batches[0]
        .targets
        .to_data()
        .iter::<i64>()
        .collect::<Vec<_>>();
    let expected: Vec<i64> = test.labels[..100].iter().map(|&l| i64::from(l)).collect();
    assert_eq!(labels, expected);
    let pixels = batches[0]
        .images
        .to_data()
        .iter::<f32>()
        .collect::<Vec<_>>();
    assert_eq!(&pixels[..64], test.image(0));

    // Burn's Batcher gives the same tensors.
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let items = (0..3).map(|i| test.get(i).unwrap()).collect();
    let batch = ClassificationBatcher::for_data(&test).batch(items, &device);
    assert_eq!(batch.images.dims(), [3, 1, 8, 8]);
    let pixels = batch.images.to_data().iter::<f32>().collect::<Vec<_>>();
    assert_eq!(&pixels[64..128], test.image(1));

    // A shuffled pass visits every image once.
    let shuffled: usize = test.batches(64, Some(3), &device).map(|b| b.len()).sum();
    assert_eq!(shuffled, test.len());
}
