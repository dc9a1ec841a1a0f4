//! Character-level text data: the shipped Tiny Shakespeare prefix, a character vocabulary, a
//! contiguous train/validation split and batches of random context windows.
//!
//! Everything random is driven by [`SplitMix64`] from an explicit seed, so the same seed gives
//! the same windows on every platform and backend: two optimizers trained from the same seed see
//! exactly the same batches.

use crate::data::shuffle::SplitMix64;
use burn::tensor::{Device, Int, Tensor, TensorData};
use flate2::read::GzDecoder;
use std::io::Read;

/// The first 400,433 bytes of char-rnn's Tiny Shakespeare, gzip'd (public-domain text, selection
/// by Andrej Karpathy, MIT; see `models/data/tinyshakespeare/README.md`). Embedded in the binary,
/// so loading works from any working directory and needs no download.
pub const SHAKESPEARE_GZ: &[u8] = include_bytes!("../../data/tinyshakespeare/input.txt.gz");

/// Length in characters (= bytes, the text is ASCII) of the shipped prefix.
pub const SHAKESPEARE_LEN: usize = 400_433;

/// Share of the text [`shakespeare_corpus`] keeps, at the end, for validation.
pub const SHAKESPEARE_VAL_FRACTION: f64 = 0.1;

/// The shipped Tiny Shakespeare prefix as a string.
///
/// # Panics
///
/// Never for the embedded data, which the tests check; a panic would mean a corrupted build.
pub fn load_shakespeare() -> String {
    let mut text = String::with_capacity(SHAKESPEARE_LEN);
    GzDecoder::new(SHAKESPEARE_GZ)
        .read_to_string(&mut text)
        .expect("the embedded input.txt.gz is valid gzip'd UTF-8");
    text
}

/// The shipped Tiny Shakespeare split 90/10 into training and validation text
/// ([`SHAKESPEARE_VAL_FRACTION`]).
pub fn shakespeare_corpus() -> CharCorpus {
    CharCorpus::from_text(&load_shakespeare(), SHAKESPEARE_VAL_FRACTION)
        .expect("the embedded text is not empty")
}

/// A character vocabulary: the distinct characters of a text, sorted, numbered from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
}

impl CharVocab {
    /// The vocabulary of every distinct character of `text`, or an error for an empty text.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err("cannot build a character vocabulary from an empty text".into());
        }
        Ok(Self { chars })
    }

    /// Number of distinct characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (never, for one built by [`from_text`](Self::from_text)).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.chars.binary_search(&c).ok().map(|i| i as u32)
    }

    /// The character of `id`, if it is in range.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The ids of the characters of `text`; the error names the first unknown character and its
    /// position (counted in characters from 0).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.id(c).ok_or_else(|| {
                    format!("character {c:?} at position {i} is not in the vocabulary")
                })
            })
            .collect()
    }

    /// The text of `ids`; the error names the first id out of range.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        ids.iter()
            .map(|&id| {
                self.char(id).ok_or_else(|| {
                    format!(
                        "token id {id} is out of range for a vocabulary of {}",
                        self.len()
                    )
                })
            })
            .collect()
    }
}

/// A text as token ids over its own character vocabulary, split into a training head and a
/// validation tail.
#[derive(Clone, Debug)]
pub struct CharCorpus {
    /// The vocabulary of the whole text (both splits).
    pub vocab: CharVocab,
    /// The first `1 − val_fraction` of the text.
    pub train: Vec<u32>,
    /// The last `val_fraction` of the text.
    pub val: Vec<u32>,
}

impl CharCorpus {
    /// Encodes `text` and splits it: the first `round((1 − val_fraction)·len)` characters train,
    /// the rest validate. The split is contiguous (not shuffled), so no validation window overlaps
    /// a training window, and deterministic.
    ///
    /// Errors for an empty text or a `val_fraction` outside `[0, 1)`.
    pub fn from_text(text: &str, val_fraction: f64) -> Result<Self, String> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(format!(
                "validation fraction must be in [0, 1), got {val_fraction}"
            ));
        }
        let vocab = CharVocab::from_text(text)?;
        let mut train = vocab.encode(text)?;
        let cut = ((1.0 - val_fraction) * train.len() as f64).round() as usize;
        let val = train.split_off(cut.min(train.len()));
        Ok(Self { vocab, train, val })
    }
}

/// Inputs and next-character targets for a batch of context windows, on one device.
#[derive(Clone, Debug)]
pub struct LmBatch {
    /// Token ids `[batch, context]`.
    pub inputs: Tensor<2, Int>,
    /// The token following each input token, `[batch, context]`.
    pub targets: Tensor<2, Int>,
}

impl LmBatch {
    /// The windows of `context + 1` tokens starting at `starts` in `tokens`: inputs are the first
    /// `context`, targets the last `context`.
    ///
    /// # Panics
    ///
    /// If `context` is 0, `starts` is empty, or a window runs past the end of `tokens`.
    pub fn from_windows(tokens: &[u32], starts: &[usize], context: usize, device: &Device) -> Self {
        assert!(context > 0, "LmBatch: the context must be at least 1 token");
        assert!(!starts.is_empty(), "LmBatch: no window to batch");
        let mut inputs = Vec::with_capacity(starts.len() * context);
        let mut targets = Vec::with_capacity(starts.len() * context);
        for &start in starts {
            assert!(
                start + context < tokens.len(),
                "LmBatch: the window at {start} of {} + 1 tokens runs past the end of {} tokens",
                context,
                tokens.len()
            );
            let window = &tokens[start..=start + context];
            inputs.extend(window[..context].iter().map(|&t| i64::from(t)));
            targets.extend(window[1..].iter().map(|&t| i64::from(t)));
        }
        let shape = [starts.len(), context];
        Self {
            inputs: Tensor::from_data(TensorData::new(inputs, shape), device),
            targets: Tensor::from_data(TensorData::new(targets, shape), device),
        }
    }

    /// Number of windows.
    pub fn batch_size(&self) -> usize {
        self.inputs.dims()[0]
    }

    /// Number of predicted tokens, `batch × context` (the `bs` of Sophia-G's denominator).
    pub fn num_tokens(&self) -> usize {
        self.inputs.shape().num_elements()
    }
}

/// Checks that `tokens` hold at least one window of `context + 1` tokens.
fn check_windows(tokens: &[u32], context: usize, what: &str) -> Result<(), String> {
    if context == 0 {
        return Err("the context must be at least 1 token".into());
    }
    if tokens.len() <= context {
        return Err(format!(
            "a context of {context} tokens needs at least {} tokens of {what}, which has only {}",
            context + 1,
            tokens.len()
        ));
    }
    Ok(())
}

/// Random context windows from a token sequence, drawn uniformly with [`SplitMix64`].
#[derive(Clone, Debug)]
pub struct WindowSampler {
    tokens: Vec<u32>,
    context: usize,
    rng: SplitMix64,
}

impl WindowSampler {
    /// A sampler of windows of `context` inputs (+1 target) from `tokens`, seeded with `seed`.
    ///
    /// Errors if `context` is 0 or `tokens` are too short for one window.
    pub fn new(tokens: &[u32], context: usize, seed: u64) -> Result<Self, String> {
        check_windows(tokens, context, "text")?;
        Ok(Self {
            tokens: tokens.to_vec(),
            context,
            rng: SplitMix64::new(seed),
        })
    }

    /// The start positions of the next `batch_size` windows (each in `0..len − context`).
    pub fn next_starts(&mut self, batch_size: usize) -> Vec<usize> {
        let positions = self.tokens.len() - self.context;
        (0..batch_size).map(|_| self.rng.below(positions)).collect()
    }

    /// The next batch of `batch_size` random windows.
    ///
    /// # Panics
    ///
    /// If `batch_size` is 0.
    pub fn next_batch(&mut self, batch_size: usize, device: &Device) -> LmBatch {
        assert!(
            batch_size > 0,
            "WindowSampler: the batch size must be positive"
        );
        let starts = self.next_starts(batch_size);
        LmBatch::from_windows(&self.tokens, &starts, self.context, device)
    }
}

/// `count` windows spread evenly over `tokens` (the first at 0, the last ending at the end), for a
/// fixed validation set; fewer when `tokens` hold fewer distinct start positions.
///
/// Errors if `context` or `count` is 0 or `tokens` are too short for one window.
pub fn spaced_windows(tokens: &[u32], context: usize, count: usize) -> Result<Vec<usize>, String> {
    check_windows(tokens, context, "text")?;
    if count == 0 {
        return Err("at least one validation window is needed".into());
    }
    let last = tokens.len() - context - 1;
    let count = count.min(last + 1);
    if count == 1 {
        return Ok(vec![0]);
    }
    let mut starts: Vec<usize> = (0..count).map(|i| i * last / (count - 1)).collect();
    starts.dedup();
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_text_loads_with_its_vocabulary() {
        let text = load_shakespeare();
        assert_eq!(text.len(), SHAKESPEARE_LEN);
        assert!(text.starts_with("First Citizen:\nBefore we proceed any further"));
        assert!(text.ends_with("quite thrown down.\n"));
        let corpus = shakespeare_corpus();
        assert_eq!(corpus.vocab.len(), 63);
        assert_eq!(corpus.train.len() + corpus.val.len(), SHAKESPEARE_LEN);
        assert_eq!(corpus.val.len(), 40_043);
    }

    #[test]
    fn the_split_is_deterministic_and_contiguous() {
        let a = shakespeare_corpus();
        let b = shakespeare_corpus();
        assert_eq!(a.train, b.train);
        assert_eq!(a.val, b.val);
        let text = load_shakespeare();
        let head = a.vocab.decode(&a.train).unwrap();
        let tail = a.vocab.decode(&a.val).unwrap();
        assert_eq!(format!("{head}{tail}"), text);
        assert!(text.starts_with(&head));
    }

    #[test]
    fn vocabulary_round_trips_and_rejects_unknowns() {
        let vocab = CharVocab::from_text("hello, world\n").unwrap();
        assert_eq!(
            vocab.chars(),
            &['\n', ' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
        );
        let ids = vocab.encode("world, hello").unwrap();
        assert_eq!(ids[0], vocab.id('w').unwrap());
        assert_eq!(vocab.decode(&ids).unwrap(), "world, hello");
        let err = vocab.encode("help").unwrap_err();
        assert!(err.contains("'p' at position 3"), "{err}");
        let err = vocab.decode(&[0, 10]).unwrap_err();
        assert!(err.contains("token id 10"), "{err}");
        assert!(CharVocab::from_text("").is_err());
    }

    #[test]
    fn bad_splits_and_short_texts_are_errors() {
        let err = CharCorpus::from_text("abc", 1.0).unwrap_err();
        assert!(err.contains("[0, 1)"), "{err}");
        let tokens = [0u32, 1, 2, 3];
        let err = WindowSampler::new(&tokens, 4, 0).unwrap_err();
        assert!(
            err.contains("context of 4 tokens needs at least 5 tokens"),
            "{err}"
        );
        assert!(WindowSampler::new(&tokens, 3, 0).is_ok());
        assert!(WindowSampler::new(&tokens, 0, 0).is_err());
        assert!(spaced_windows(&tokens, 3, 0).is_err());
    }

    #[test]
    fn windows_are_seeded_and_targets_are_shifted_inputs() {
        let tokens: Vec<u32> = (0..200).collect();
        let mut a = WindowSampler::new(&tokens, 8, 5).unwrap();
        let mut b = WindowSampler::new(&tokens, 8, 5).unwrap();
        let mut c = WindowSampler::new(&tokens, 8, 6).unwrap();
        let starts = a.next_starts(16);
        assert_eq!(starts, b.next_starts(16));
        assert_ne!(starts, c.next_starts(16));
        assert!(starts.iter().all(|&s| s + 8 < 200));

        let device = Device::flex();
        let batch = LmBatch::from_windows(&tokens, &[3, 100], 4, &device);
        assert_eq!(batch.num_tokens(), 8);
        let inputs: Vec<i64> = batch.inputs.into_data().try_into_vec_as::<i64>().unwrap();
        let targets: Vec<i64> = batch.targets.into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(inputs, [3, 4, 5, 6, 100, 101, 102, 103]);
        assert_eq!(targets, [4, 5, 6, 7, 101, 102, 103, 104]);
    }

    #[test]
    fn spaced_windows_cover_the_text() {
        let tokens: Vec<u32> = (0..101).collect();
        assert_eq!(spaced_windows(&tokens, 10, 3).unwrap(), [0, 45, 90]);
        assert_eq!(spaced_windows(&tokens, 10, 1).unwrap(), [0]);
        assert_eq!(spaced_windows(&tokens, 100, 5).unwrap(), [0]);
        assert_eq!(spaced_windows(&tokens, 98, 9).unwrap(), [0, 1, 2]);
    }
}
