//! A tiny GPT-style character language model: learned token and position embeddings, a stack of
//! pre-norm causal self-attention blocks (Burn's [`TransformerEncoder`] with an autoregressive
//! mask), a final layer norm and a linear head over the vocabulary.

use super::text::LmBatch;
use burn::config::Config;
use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};

/// Standard deviation of the token and position embeddings at initialisation: about the scale of
/// what a block adds to the residual stream with Burn's default (Kaiming-uniform) linear layers,
/// so that neither drowns the other at the start.
pub const EMBEDDING_INIT_STD: f64 = 0.5;

/// Configuration of a [`CharLm`].
#[derive(Config, Debug)]
pub struct CharLmConfig {
    /// Number of distinct tokens (characters).
    pub vocab_size: usize,
    /// Longest input the model takes (number of learned positions).
    pub context: usize,
    /// Width of the residual stream.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads per block; must divide `d_model`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Transformer blocks.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Hidden width of each block's feed-forward network.
    #[config(default = 256)]
    pub d_ff: usize,
    /// Dropout in the blocks (0 for short pre-training runs, as in the Sophia reference).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl CharLmConfig {
    /// Checks the sizes; the error names the first invalid field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("context", self.context),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("d_ff", self.d_ff),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("CharLm: `{name}` must be positive"));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "CharLm: `d_model` = {} is not divisible by `n_heads` = {}",
                self.d_model, self.n_heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "CharLm: `dropout` must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// The model with fresh parameters on `device` (use an autodiff device to train it), or an
    /// error naming an invalid field. Parameters come from the device's RNG: seed it
    /// ([`Device::seed`]) for reproducible weights.
    pub fn try_init(&self, device: &Device) -> Result<CharLm, String> {
        self.validate()?;
        let embedding = |n| {
            EmbeddingConfig::new(n, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: EMBEDDING_INIT_STD,
                })
                .init(device)
        };
        Ok(CharLm {
            token_embedding: embedding(self.vocab_size),
            position_embedding: embedding(self.context),
            blocks: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.n_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.vocab_size).init(device),
            context: self.context,
        })
    }

    /// The model with fresh parameters on `device`.
    ///
    /// # Panics
    ///
    /// If a size is invalid; the message names the field.
    pub fn init(&self, device: &Device) -> CharLm {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A decoder-only (GPT-style) character language model; see the [module docs](self).
#[derive(Module, Debug)]
pub struct CharLm {
    /// Token embeddings `[vocab_size, d_model]`.
    pub token_embedding: Embedding,
    /// Learned position embeddings `[context, d_model]`.
    pub position_embedding: Embedding,
    /// Pre-norm transformer blocks, run with a causal mask.
    pub blocks: TransformerEncoder,
    /// Layer norm after the last block.
    pub norm: LayerNorm,
    /// Output head: residual stream to vocabulary logits.
    pub head: Linear,
    /// Longest input the model takes.
    pub context: usize,
}

impl CharLm {
    /// Next-token logits `[batch, seq, vocab_size]` for token ids `[batch, seq]`. Position `i`
    /// only sees tokens `0..=i`.
    ///
    /// # Panics
    ///
    /// If `seq` is longer than the model's context (or 0).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = tokens.dims();
        assert!(
            seq > 0 && seq <= self.context,
            "CharLm: input of {seq} tokens, but the model takes 1 to {} (its context)",
            self.context
        );
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        let x = self.token_embedding.forward(tokens) + self.position_embedding.forward(positions);
        let mask = generate_autoregressive_mask(batch, seq, &device);
        let x = self
            .blocks
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        self.head.forward(self.norm.forward(x))
    }

    /// The logits of [`forward`](Self::forward) flattened to `[batch·seq, vocab_size]`, one row
    /// per predicted token (what cross-entropy and Sophia-G's label sampling take).
    pub fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        self.forward(tokens).flatten(0, 1)
    }

    /// Mean next-character cross-entropy (nats per token) over every position of `batch`.
    pub fn loss(&self, batch: &LmBatch) -> Tensor<1> {
        cross_entropy(
            self.logits(batch.inputs.clone()),
            batch.targets.clone().flatten(0, 1),
        )
    }

    /// Mean cross-entropy against labels drawn from the model's own predictions: `sample` gets the
    /// detached logits `[batch·seq, vocab_size]` and returns one label per row. Its gradient is
    /// the ĝ of Sophia-G's Gauss-Newton-Bartlett Hessian estimate; pass
    /// `firebox_optim::curvature::gnb::sample_labels`.
    pub fn sampled_loss(
        &self,
        inputs: Tensor<2, Int>,
        sample: impl FnOnce(Tensor<2>) -> Tensor<1, Int>,
    ) -> Tensor<1> {
        let logits = self.logits(inputs);
        let labels = sample(logits.clone().detach());
        cross_entropy(logits, labels)
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.num_params()
    }
}

/// Mean cross-entropy `−mean_n log softmax(logits_n)[target_n]` of logits `[n, classes]` against
/// class ids `[n]`, as a one-element tensor.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [rows, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([rows, 1]));
    picked.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn tokens(ids: &[i64], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(ids.to_vec(), shape), device)
    }

    fn tiny(device: &Device) -> CharLm {
        device.seed(3);
        CharLmConfig::new(11, 8)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_ff(32)
            .init(device)
    }

    #[test]
    fn logits_have_one_row_per_token() {
        let device = Device::flex();
        let model = tiny(&device);
        let x = tokens(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [2, 5], &device);
        assert_eq!(model.forward(x.clone()).dims(), [2, 5, 11]);
        assert_eq!(model.logits(x).dims(), [10, 11]);
    }

    #[test]
    fn a_future_token_does_not_change_earlier_logits() {
        let device = Device::flex();
        let model = tiny(&device);
        let a = values(model.forward(tokens(&[1, 2, 3, 4, 5, 6], [1, 6], &device)));
        let b = values(model.forward(tokens(&[1, 2, 3, 9, 5, 6], [1, 6], &device)));
        let vocab = 11;
        let first_changed = 3 * vocab;
        for (i, (x, y)) in a[..first_changed]
            .iter()
            .zip(&b[..first_changed])
            .enumerate()
        {
            assert!((x - y).abs() < 1e-5, "logit {i}: {x} vs {y}");
        }
        // ... while the changed position and the later ones do see it.
        let later_diff: f32 = a[first_changed..]
            .iter()
            .zip(&b[first_changed..])
            .map(|(x, y)| (x - y).abs())
            .sum();
        assert!(
            later_diff > 1e-3,
            "later logits did not change: {later_diff}"
        );
    }

    #[test]
    #[should_panic(expected = "input of 9 tokens, but the model takes 1 to 8")]
    fn inputs_longer_than_the_context_are_rejected() {
        let device = Device::flex();
        tiny(&device).forward(tokens(&[0; 9], [1, 9], &device));
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_field() {
        let device = Device::flex();
        let err = CharLmConfig::new(11, 8)
            .with_d_model(10)
            .with_n_heads(4)
            .try_init(&device)
            .unwrap_err();
        assert!(err.contains("not divisible"), "{err}");
        let err = CharLmConfig::new(0, 8).try_init(&device).unwrap_err();
        assert!(err.contains("`vocab_size`"), "{err}");
    }

    #[test]
    fn cross_entropy_matches_its_closed_form() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 0.0, 2.0, 0.0, 0.0], [2, 3]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        let got = values(cross_entropy(logits, targets))[0] as f64;
        let e2 = 2f64.exp();
        let expected = (3f64.ln() + ((e2 + 2.0) / e2).ln()) / 2.0;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn the_loss_starts_near_uniform_and_sampled_labels_are_used() {
        let device = Device::flex();
        let model = tiny(&device);
        let inputs: Vec<i64> = (0..16).map(|i| i % 11).collect();
        let targets: Vec<i64> = (1..17).map(|i| i % 11).collect();
        let batch = LmBatch {
            inputs: tokens(&inputs, [2, 8], &device),
            targets: tokens(&targets, [2, 8], &device),
        };
        let loss = values(model.loss(&batch))[0];
        // ln 11 = 2.40; an untrained model is within a nat of uniform.
        assert!((1.4..3.4).contains(&loss), "initial loss {loss}");
        let zeros = values(model.sampled_loss(batch.inputs.clone(), |logits| {
            assert_eq!(logits.dims(), [16, 11]);
            Tensor::zeros([16], &logits.device())
        }))[0];
        let logits = model.logits(batch.inputs);
        let expected = values(cross_entropy(logits, Tensor::zeros([16], &device)))[0];
        assert!((zeros - expected).abs() < 1e-6, "{zeros} vs {expected}");
    }
}
