//! Parameter-efficient fine-tuning with `firebox-adapters`: pretrain a deep residual MLP of
//! `firebox-models` ([`ResMlp`]: 8 blocks of `Linear(512, 512)`) on the shipped 8x8 digits 0–4,
//! then adapt it to digits 5–9 (the same five outputs, read as 5–9) with full fine-tuning, LoRA
//! and MoS, from the same pretrained weights, batch order and schedule. Prints one table:
//! trainable parameters, adapter file size, test accuracy and loss on 5–9, step time, memory.
//!
//! ```text
//! cargo run --release --example finetune
//! cargo run --release --example finetune -- --epochs 40 --rank 16
//! cargo run --release --features wgpu --example finetune -- --device wgpu
//! ```
//!
//! - **LoRA**: rank 8, α = 16 on the eight `blocks.*.fc` layers (peft's definition; the base,
//!   the input layer, the norms and the head stay frozen).
//! - **MoS**: the same layers, materialised rank r = 8 from an equivalent rank v = 1 (no private
//!   ranks, l = 2 shards per vector): one shard pool shared by the eight blocks, so
//!   `v·L·(d_in + d_out)` = 8x fewer trainable parameters than that LoRA. The reference code
//!   requires `(r − p) ≤ (v − p)·L`, which is why the saving needs the eight repeated blocks.
//! - All runs: AdamW (β = 0.9/0.999, no weight decay), linear warm-up then cosine decay.
//!   Adapters take a larger lr than full fine-tuning, as usual (peft examples use 10x).
//!
//! Memory: "params + AdamW state" counts what the run must keep per trainable parameter (the
//! value and two moments, f32); "peak RSS" is the process's high-water mark (`VmHWM`, Linux)
//! after each phase, so a later phase only shows when it needs more than every earlier one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use clap::Parser;
use firebox::adapters::{LoraAdapters, LoraConfig, MosConfig, MosModel, Targets, save_lora};
use firebox::device::parse_device;
use firebox::models::data::{ClassificationBatch, ClassificationData, digits_split};
use firebox::models::{ResMlp, ResMlpConfig};

#[path = "common/eval.rs"]
mod eval;

/// Pretrain on digits 0–4, then fine-tune on 5–9 with full FT, LoRA and MoS, and compare.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Device: flex, ndarray, wgpu, vulkan, metal or cuda (if compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Pretraining epochs on digits 0–4.
    #[arg(long, default_value_t = 30)]
    pretrain_epochs: usize,
    /// Fine-tuning epochs on digits 5–9 (each method).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Residual blocks (the layers the adapters share pools across).
    #[arg(long, default_value_t = 8)]
    blocks: usize,
    /// LoRA rank, and MoS's materialised rank r.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// MoS equivalent rank v (its trainable budget).
    #[arg(long, default_value_t = 1)]
    mos_equivalent_rank: usize,
    /// Peak lr of pretraining and full fine-tuning.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Peak lr of LoRA and MoS.
    #[arg(long, default_value_t = 5e-3)]
    adapter_lr: f64,
    /// Methods to run, comma-separated among full, lora, mos.
    #[arg(long, default_value = "full,lora,mos", value_delimiter = ',')]
    methods: Vec<String>,
    /// Seed of the split, the weights and the batch order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the adapter files go.
    #[arg(long, default_value = "target/finetune")]
    out: PathBuf,
}

struct Row {
    method: String,
    trainable: usize,
    file: String,
    loss: f64,
    accuracy: f64,
    step_ms: f64,
    state_bytes: usize,
    peak_rss: Option<u64>,
}

/// A table row; the memory figures are taken here, after the run.
fn row(
    method: String,
    trainable: usize,
    file: String,
    (loss, accuracy): (f64, f64),
    step_ms: f64,
) -> Row {
    Row {
        method,
        trainable,
        file,
        loss,
        accuracy,
        step_ms,
        state_bytes: 3 * 4 * trainable,
        peak_rss: peak_rss(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The images whose label lies in `from..from + 5`, relabelled `0..5`.
fn five_classes(data: &ClassificationData, from: u8) -> ClassificationData {
    let keep: Vec<usize> = (0..data.n)
        .filter(|&i| (from..from + 5).contains(&data.labels[i]))
        .collect();
    let mut subset = data.subset(&keep);
    for label in &mut subset.labels {
        *label -= from;
    }
    subset
}

fn learning_rate(peak: f64, step: usize, steps: usize) -> f64 {
    let warmup = (steps / 20).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

fn loss_of(logits: Tensor<2>, batch: &ClassificationBatch) -> Tensor<1> {
    eval::cross_entropy(logits, batch.targets.clone())
}

/// Mean test loss and accuracy (%) of a plain (non-autodiff) model.
fn evaluate(model: &ResMlp, data: &ClassificationData, device: &Device) -> (f64, f64) {
    eval::loss_and_accuracy(|x| model.forward_flat(x.flatten(1, 3)), data, device)
}

/// AdamW training of whatever parameters of `model` are trainable; returns the model and the
/// mean step time in ms (forward, backward, step, and a device sync).
fn train<M: Module>(
    mut model: M,
    logits: impl Fn(&M, Tensor<2>) -> Tensor<2>,
    data: &ClassificationData,
    epochs: usize,
    peak_lr: f64,
    cli: &Cli,
    device: &Device,
) -> (M, f64) {
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let steps = epochs * data.n.div_ceil(cli.batch_size);
    let (mut step, mut seconds) = (0, 0.0);
    for epoch in 0..epochs {
        for batch in data.batches(cli.batch_size, Some(cli.seed + epoch as u64), device) {
            let start = Instant::now();
            let loss = loss_of(logits(&model, batch.images.clone().flatten(1, 3)), &batch);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(learning_rate(peak_lr, step, steps), model, grads);
            let _ = loss.into_scalar::<f32>();
            seconds += start.elapsed().as_secs_f64();
            step += 1;
        }
    }
    (model, 1e3 * seconds / step.max(1) as f64)
}

fn trainable_params<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if p.is_require_grad() {
                self.0 += p.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn adapter_file(dir: &Path) -> String {
    std::fs::metadata(dir.join(firebox::adapters::io::WEIGHTS_FILE))
        .map(|m| kib(m.len()))
        .unwrap_or_else(|e| format!("? ({e})"))
}

fn run(cli: &Cli) -> Result<(), String> {
    for m in &cli.methods {
        if !["full", "lora", "mos"].contains(&m.as_str()) {
            return Err(format!("unknown method `{m}` (known: full, lora, mos)"));
        }
    }
    let wants = |m: &str| cli.methods.iter().any(|x| x == m);
    let eval_device = parse_device(&cli.device)?;
    let device = eval_device.clone().autodiff();
    let total = Instant::now();
    let (train_all, test_all) = digits_split(cli.seed);
    let (source_train, source_test) = (five_classes(&train_all, 0), five_classes(&test_all, 0));
    let (target_train, target_test) = (five_classes(&train_all, 5), five_classes(&test_all, 5));
    let config = ResMlpConfig::new(64)
        .with_width(cli.width)
        .with_blocks(cli.blocks)
        .with_classes(5);
    device.seed(cli.seed);
    let model = config.init(&device);
    let n_params = model.num_params();
    println!(
        "pretraining a {n_params}-parameter ResMlp ({} blocks of {}) on digits 0-4 ({} images, {} epochs) ...",
        cli.blocks, cli.width, source_train.n, cli.pretrain_epochs
    );
    let forward = |m: &ResMlp, x: Tensor<2>| m.forward_flat(x);
    let (pretrained, ms) = train(
        model,
        forward,
        &source_train,
        cli.pretrain_epochs,
        cli.lr,
        cli,
        &device,
    );
    let (_, source_acc) = evaluate(&pretrained.valid(), &source_test, &eval_device);
    let (_, zero_acc) = evaluate(&pretrained.valid(), &target_test, &eval_device);
    println!(
        "  {ms:.1} ms/step; test accuracy on 0-4: {source_acc:.2}%; on 5-9 before fine-tuning: {zero_acc:.2}%"
    );
    println!(
        "fine-tuning on digits 5-9 ({} images, {} epochs each) ...",
        target_train.n, cli.epochs
    );
    let mut rows = Vec::new();

    if wants("full") {
        let trainable = trainable_params(&pretrained);
        let (full, ms) = train(
            pretrained.clone(),
            forward,
            &target_train,
            cli.epochs,
            cli.lr,
            cli,
            &device,
        );
        let (loss, accuracy) = evaluate(&full.valid(), &target_test, &eval_device);
        rows.push(row(
            "full fine-tuning".into(),
            trainable,
            format!("{} (whole model)", kib(4 * n_params as u64)),
            (loss, accuracy),
            ms,
        ));
    }

    let targets = Targets::glob(["blocks.*.fc"]);
    if wants("lora") {
        let adapters = LoraAdapters::new().with(
            "digits_5_9",
            LoraConfig::new(cli.rank, 2.0 * cli.rank as f64, targets.clone()),
        );
        let lora = adapters
            .attach(pretrained.clone())
            .map_err(|e| e.to_string())?;
        let trainable = trainable_params(&lora);
        let (lora, ms) = train(
            lora,
            forward,
            &target_train,
            cli.epochs,
            cli.adapter_lr,
            cli,
            &device,
        );
        let (loss, accuracy) = evaluate(&lora.valid(), &target_test, &eval_device);
        let dir = cli.out.join("lora");
        save_lora(&lora, &adapters, &dir).map_err(|e| e.to_string())?;
        rows.push(row(
            format!("LoRA r={}", cli.rank),
            trainable,
            adapter_file(&dir),
            (loss, accuracy),
            ms,
        ));
    }

    if wants("mos") {
        let v = cli.mos_equivalent_rank;
        let mos_config =
            MosConfig::new(cli.rank, v, 0, 2, 2.0 * cli.rank as f64, targets).with_seed(cli.seed);
        let mos = mos_config
            .attach(pretrained.clone())
            .map_err(|e| e.to_string())?;
        let trainable = mos.trainable_params();
        let adapted = |m: &MosModel<ResMlp>, x: Tensor<2>| m.adapted().forward_flat(x);
        let (mos, ms) = train(
            mos,
            adapted,
            &target_train,
            cli.epochs,
            cli.adapter_lr,
            cli,
            &device,
        );
        let (loss, accuracy) = evaluate(&mos.merge().valid(), &target_test, &eval_device);
        let dir = cli.out.join("mos");
        mos.save_adapter(&mos_config, &dir)
            .map_err(|e| e.to_string())?;
        rows.push(row(
            format!("MoS r={} v={v}", cli.rank),
            trainable,
            adapter_file(&dir),
            (loss, accuracy),
            ms,
        ));
    }

    println!();
    println!(
        "| method | trainable params | % of full | adapter file | test accuracy 5-9 | test loss | ms/step | params + AdamW state | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2}% | {} | {:.2}% | {:.4} | {:.1} | {} | {} |",
            r.method,
            r.trainable,
            100.0 * r.trainable as f64 / n_params as f64,
            r.file,
            r.accuracy,
            r.loss,
            r.step_ms,
            kib(r.state_bytes as u64),
            r.peak_rss
                .map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
        );
    }
    if let [full, lora, mos] = rows.as_slice() {
        println!(
            "\nLoRA vs full fine-tuning: {:+.2} accuracy points with {:.2}% of its trainable parameters; MoS vs LoRA: {:+.2} points with {:.1}x fewer.",
            lora.accuracy - full.accuracy,
            100.0 * lora.trainable as f64 / full.trainable as f64,
            mos.accuracy - lora.accuracy,
            lora.trainable as f64 / mos.trainable as f64
        );
    }
    println!(
        "total {:.0} s on {}",
        total.elapsed().as_secs_f64(),
        cli.device
    );
    Ok(())
}
