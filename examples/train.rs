//! Trains an example model on the shipped 8x8 digits (or MNIST) with one optimizer, or with every
//! optimizer of the registry for a side-by-side comparison.
//!
//! ```text
//! cargo run --release --example train -- --optimizer adabelief
//! cargo run --release --example train -- --optimizer all --model cnn --chart target/cnn.svg
//! cargo run --release --example train -- --optimizer adam --data ~/mnist --epochs 2
//! ```
//!
//! Every optimizer starts from the same weights and sees the batches in the same order for a
//! given `--seed`. Errors (unknown optimizer, missing data, a device that is not compiled in) are
//! printed and exit with status 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::Device;
use clap::{Parser, ValueEnum};
use firebox::device::{Availability, BackendName, probe};
use firebox::models::data::shuffle::permutation;
use firebox::models::data::{ClassificationData, digits_split, load_mnist};
use firebox::models::train::evaluate;
use firebox::models::{Classifier, CnnConfig, MlpConfig};
use firebox::registry::{ADAPTIVE, build_adaptive, build_trainer, trainer_names};
use firebox::trainer::{AdaptiveBatchTrainer, TrainOptimizer, warmup_cosine_lr_by_samples};
use indicatif::{ProgressBar, ProgressStyle};

#[path = "common/chart.rs"]
mod chart;

/// Train an example model with firebox's optimizers.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Optimizer name, or `all` to compare every registered optimizer.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Model to train.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    model: ModelKind,
    /// Device: flex, ndarray, wgpu, vulkan, metal or cuda (if compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate; defaults to the optimizer's registry default.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the weights, the train/test split and the batch order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory of MNIST IDX files (plain or .gz) to train on instead of the shipped digits.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Use only the first N training images (handy with MNIST on a CPU).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// AdAdaGrad's batch-size test: norm, ip, orth or ip+orth (`--optimizer adadagrad`; the
    /// batch starts at `--batch-size`).
    #[arg(long, default_value = "norm")]
    test: String,
    /// AdAdaGrad's cap on the batch size.
    #[arg(long, default_value_t = 256)]
    max_batch_size: usize,
    /// Where to write the SVG chart of the per-epoch training loss.
    #[arg(long, value_name = "PATH", default_value = "target/train_loss.svg")]
    chart: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    /// Flattened image -> 64 hidden units (ReLU) -> 10 classes.
    Mlp,
    /// Two 3x3 convolutions, adaptive average pooling, a linear head.
    Cnn,
}

/// A registered optimizer at a fixed batch size, or AdAdaGrad with a growing one.
enum Method {
    Fixed(Box<TrainOptimizer>),
    Adaptive(Box<AdaptiveBatchTrainer>),
}

fn build_method(name: &str, cli: &Cli) -> Result<(Method, f64), String> {
    if name == ADAPTIVE {
        let (trainer, lr) = build_adaptive(&cli.test, cli.batch_size, cli.max_batch_size)?;
        Ok((Method::Adaptive(Box::new(trainer)), lr))
    } else {
        let (optim, lr) = build_trainer(name)?;
        Ok((Method::Fixed(Box::new(optim)), lr))
    }
}

/// The outcome of training with one optimizer.
struct Run {
    name: String,
    lr: f64,
    losses: Vec<f64>,
    accuracies: Vec<f64>,
    seconds: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.epochs == 0 || cli.batch_size == 0 {
        return Err("--epochs and --batch-size must be positive".into());
    }
    let names: Vec<String> = if cli.optimizer == "all" {
        let mut names: Vec<String> = trainer_names().into_iter().map(String::from).collect();
        names.push(ADAPTIVE.into());
        names
    } else {
        build_method(&cli.optimizer, cli)?;
        vec![cli.optimizer.clone()]
    };
    let device = open_device(&cli.device)?.autodiff();
    let (train, test, source) = load_data(cli)?;
    println!(
        "{source}: {} training and {} test images of {}x{}; model {:?}, device {}, {} epochs, \
         batch size {}, seed {}",
        train.len(),
        test.len(),
        train.height,
        train.width,
        cli.model,
        cli.device,
        cli.epochs,
        cli.batch_size,
        cli.seed
    );

    let mut runs = Vec::new();
    for name in &names {
        let (optim, default_lr) = build_method(name, cli)?;
        let lr = cli.lr.unwrap_or(default_lr);
        let verbose = names.len() == 1;
        let run = match cli.model {
            ModelKind::Mlp => {
                let classes = train.num_classes().max(10);
                let config = MlpConfig::for_images(train.height, train.width).with_classes(classes);
                device.seed(cli.seed);
                let model = config.init(&device);
                train_one(name, model, optim, lr, &train, &test, &device, cli, verbose)
            }
            ModelKind::Cnn => {
                let config = CnnConfig::new().with_classes(train.num_classes().max(10));
                device.seed(cli.seed);
                let model = config.init(&device);
                train_one(name, model, optim, lr, &train, &test, &device, cli, verbose)
            }
        };
        if !verbose {
            println!(
                "{:<12} loss {:.4}  test accuracy {:.2}%  ({:.2} s)",
                run.name,
                last(&run.losses),
                100.0 * last(&run.accuracies),
                run.seconds
            );
        }
        runs.push(run);
    }

    if runs.len() > 1 {
        print_table(&runs);
    } else {
        let run = &runs[0];
        println!(
            "final test accuracy with {} (lr {}): {:.2}% in {:.2} s",
            run.name,
            run.lr,
            100.0 * last(&run.accuracies),
            run.seconds
        );
    }
    let title = format!("{:?} on {source}: mean training loss", cli.model);
    write_chart(&cli.chart, &title, &runs)
        .map_err(|e| format!("cannot write the chart {}: {e}", cli.chart.display()))?;
    println!("loss curves written to {}", cli.chart.display());
    Ok(())
}

/// Parses `--device`, checking that the backend is compiled in and, for GPUs, that an adapter
/// answers.
fn open_device(name: &str) -> Result<Device, String> {
    let backend: BackendName = name.parse()?;
    match probe(backend) {
        Availability::Ready(device, _) => Ok(device),
        Availability::Unavailable(reason) => Err(reason),
    }
}

/// The training and test sets, and a name for them.
fn load_data(cli: &Cli) -> Result<(ClassificationData, ClassificationData, &'static str), String> {
    let (train, test, source) = match &cli.data {
        None => {
            let (train, test) = digits_split(cli.seed);
            (train, test, "digits 8x8")
        }
        Some(dir) => {
            let mnist = load_mnist(dir).map_err(|e| e.to_string())?;
            (mnist.train, mnist.test, "MNIST")
        }
    };
    let train = match cli.limit {
        Some(limit) => train.take(limit),
        None => train,
    };
    if train.is_empty() || test.is_empty() {
        return Err(format!("{source}: the training or test set is empty"));
    }
    Ok((train, test, source))
}

#[allow(clippy::too_many_arguments)]
fn train_one<M: Classifier>(
    name: &str,
    mut model: M,
    mut optim: Method,
    lr: f64,
    train: &ClassificationData,
    test: &ClassificationData,
    device: &Device,
    cli: &Cli,
    verbose: bool,
) -> Run {
    let steps = train.num_batches(cli.batch_size);
    let bar = ProgressBar::new((steps * cli.epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30.cyan/blue}] {pos}/{len} steps {elapsed_precise} {msg}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());

    let start = Instant::now();
    let mut losses = Vec::with_capacity(cli.epochs);
    let mut accuracies = Vec::with_capacity(cli.epochs);
    for epoch in 0..cli.epochs {
        let order_seed = cli.seed.wrapping_mul(1000).wrapping_add(epoch as u64);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let mut on_step = |batch_loss: f64, size: usize, note: String| {
            loss_sum += batch_loss * size as f64;
            seen += size;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {}/{} loss {batch_loss:.4}{note}",
                epoch + 1,
                cli.epochs
            ));
        };
        match &mut optim {
            Method::Fixed(optim) => {
                for batch in train.batches(cli.batch_size, Some(order_seed), device) {
                    let (trained, batch_loss) = optim.step(lr, model, &batch);
                    model = trained;
                    on_step(batch_loss, batch.len(), String::new());
                }
            }
            Method::Adaptive(trainer) => {
                // Batches follow the controller's size; the lr follows the samples seen
                // (warm-up over 5% of them, cosine decay to lr/10), as in the reference.
                let total = (cli.epochs * train.len()) as u64;
                let order = permutation(train.len(), order_seed);
                let mut start = 0;
                while start < order.len() {
                    let end = (start + trainer.controller.batch_size()).min(order.len());
                    let batch = train.batch(&order[start..end], device);
                    start = end;
                    let step_lr = warmup_cosine_lr_by_samples(
                        trainer.controller.samples_seen(),
                        total / 20,
                        total,
                        lr / 10.0,
                        lr,
                    );
                    let (trained, batch_loss, decision) = trainer
                        .step(step_lr, model, &batch)
                        .unwrap_or_else(|e| panic!("AdAdaGrad test failed: {e}"));
                    model = trained;
                    let note = decision.map_or(String::new(), |d| {
                        format!(
                            " | {} test {:.1} → batch {}",
                            d.test.name(),
                            d.statistic,
                            d.next_batch_size
                        )
                    });
                    on_step(batch_loss, batch.len(), note);
                }
                if verbose {
                    bar.suspend(|| {
                        println!(
                            "epoch {:>3}: AdAdaGrad batch size now {} after {} samples",
                            epoch + 1,
                            trainer.controller.batch_size(),
                            trainer.controller.samples_seen()
                        )
                    });
                }
            }
        }
        let loss = loss_sum / seen.max(1) as f64;
        let accuracy = evaluate(&model, test);
        if verbose {
            bar.suspend(|| {
                println!(
                    "epoch {:>3}/{}  train loss {loss:.4}  test accuracy {:.2}%",
                    epoch + 1,
                    cli.epochs,
                    100.0 * accuracy
                )
            });
        }
        losses.push(loss);
        accuracies.push(accuracy);
    }
    bar.finish_and_clear();
    Run {
        name: name.to_string(),
        lr,
        losses,
        accuracies,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn last(values: &[f64]) -> f64 {
    values.last().copied().unwrap_or(f64::NAN)
}

fn print_table(runs: &[Run]) {
    println!();
    println!(
        "| {:<12} | {:>8} | {:>10} | {:>9} | {:>7} |",
        "optimizer", "lr", "final loss", "test acc", "seconds"
    );
    println!(
        "|{:-<14}|{:->10}|{:->12}|{:->11}|{:->9}|",
        "", "", "", "", ""
    );
    for run in runs {
        println!(
            "| {:<12} | {:>8} | {:>10.4} | {:>8.2}% | {:>7.2} |",
            run.name,
            run.lr,
            last(&run.losses),
            100.0 * last(&run.accuracies),
            run.seconds
        );
    }
    println!();
}

/// Draws every run's per-epoch loss as a line on a log scale; non-finite losses (a diverged run)
/// are left out.
fn write_chart(path: &Path, title: &str, runs: &[Run]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let epochs = runs
        .iter()
        .map(|r| r.losses.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let finite = || {
        runs.iter()
            .flat_map(|r| r.losses.iter().copied())
            .filter(|l| l.is_finite())
    };
    // Cross-entropy spans orders of magnitude over training: a log axis shows them all.
    let y_max = finite().fold(1e-6f64, f64::max) * 1.2;
    let y_min = finite()
        .filter(|&l| l > 0.0)
        .fold(y_max, f64::min)
        .min(y_max / 10.0)
        / 1.2;

    let root = chart::svg_area(path, (900, 560))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(1usize..epochs, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("mean training loss (log scale)")
        .draw()?;
    let lines = runs
        .iter()
        .map(|run| {
            let points = run
                .losses
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite() && **l > 0.0)
                .map(|(e, &l)| (e + 1, l))
                .collect();
            (run.name.clone(), points)
        })
        .collect();
    chart::draw_lines(&mut chart, lines).map_err(|e| e.to_string())?;
    root.present()?;
    Ok(())
}
