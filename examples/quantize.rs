//! Quantization with `firebox-quant`: train the digits MLP of `firebox-models` on the shipped 8x8
//! digits, then quantize it every way the crate offers and print one table: scheme, bits, model
//! size, test accuracy and loss, change against float, CPU inference time.
//!
//! ```text
//! cargo run --release --example quantize
//! cargo run --release --example quantize -- --epochs 40 --hidden 512
//! ```
//!
//! Rows (weights `W`, activations `A`; activations are quantized at the input of each layer by an
//! [`ActivationQuant`], calibrated on training batches):
//! - **float32**: the trained model.
//! - **PTQ W8A8**: int8 symmetric weights (min-max), one scale per tensor (stored as Burn's native
//!   Q8F) or per output channel, int8 affine activations (min-max observers).
//! - **PTQ W4 g16 A8**: int4 symmetric weights with one scale per 16 input features, MSE clipping.
//! - **QAT W4A8**: int4 per-channel weights and int8 activations with learned (LSQ) steps,
//!   fine-tuned from the float model, then exported to real quantized weights; the line below
//!   the table checks that the exported model predicts what the fake-quantized one did.
//! - **GGUF Q8_0 / Q4_0**: llama.cpp's block formats (32 weights per fp16 scale), weights only.
//! - **DGQ A8W4**: INT4 weights with INT8 group scales (group 16), activations int8 with
//!   99.9-percentile clipping, run with the crate's INT8 CPU reference kernel (Burn cannot
//!   execute the format).
//! - **HAWQ-V2 @ B**: per-layer bits from {2, 4, 8} chosen on the Pareto frontier under an average
//!   of B bits per weight (Hutchinson traces on one training batch), activations int8.
//! - **HAWQ-V2 @ 3 bits/weight, 6 bits/activation**: the same for the two layer inputs
//!   (Hessian traces with respect to the activations), bits from {4, 8}.
//! - **Double Rounding**: one int8 model trained jointly at 8/6/4/2 bits (ALRS), then the 8-bit
//!   and the 4-bit models derived from the same stored integers.
//!
//! Sizes count the stored weights (codes, scales, zero points) and the float biases. CPU time is
//! a forward pass over the whole test set on flex, median of `--repeats`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Parser;
use firebox::models::data::{ClassificationData, digits_split};
use firebox::models::{Mlp, MlpConfig};
use firebox::quant::dgq::{DgqConfig, DgqWeight, dgq_quantize, quantize_activations_int8};
use firebox::quant::double_rounding::{
    Alrs, BitSwitch, Hasb, StoredModel, prepare_double_rounding,
};
use firebox::quant::gguf::{GgufType, quantize};
use firebox::quant::hawq::{
    HawqConfig, HawqPlan, activation_sensitivity, activation_trace, allocate, weight_sensitivities,
};
use firebox::quant::native::Stored;
use firebox::quant::qat::export_qat;
use firebox::quant::{
    ActivationQuant, Clipping, Observer, PtqConfig, PtqReport, QatConfig, QuantSpec, Targets,
    prepare_qat, quantize_weights,
};

#[path = "common/eval.rs"]
mod eval;

/// Train the digits MLP, quantize it every way, print one table.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Float training epochs.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// QAT and Double-Rounding fine-tuning epochs.
    #[arg(long, default_value_t = 10)]
    qat_epochs: usize,
    /// Hidden units of the MLP.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Calibration batches for activation observers.
    #[arg(long, default_value_t = 8)]
    calibration_batches: usize,
    /// Hutchinson probes for HAWQ-V2.
    #[arg(long, default_value_t = 32)]
    probes: usize,
    /// Timing repeats (median).
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// Seed of the split, the weights and the batch order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// The MLP with a fake-quantization point before each layer.
#[derive(Module, Debug)]
struct QuantMlp {
    mlp: Mlp,
    input: Option<ActivationQuant>,
    hidden: Option<ActivationQuant>,
}

impl QuantMlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let x = images.flatten(1, 3);
        let x = match &self.input {
            Some(q) => q.forward(x),
            None => x,
        };
        let h = relu(self.mlp.hidden.forward(x));
        let h = match &self.hidden {
            Some(q) => q.forward(h),
            None => h,
        };
        self.mlp.output.forward(h)
    }
}

struct Row {
    scheme: String,
    bits: String,
    stored: String,
    size_bits: u64,
    loss: f64,
    accuracy: f64,
    cpu_ms: f64,
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

fn loss_of(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    eval::cross_entropy(logits, targets)
}

/// Mean loss and accuracy (%) on `data`.
fn evaluate(
    logits: impl Fn(Tensor<4>) -> Tensor<2>,
    data: &ClassificationData,
    device: &Device,
) -> (f64, f64) {
    eval::loss_and_accuracy(logits, data, device)
}

/// Predicted classes on `data`.
fn predictions(
    logits: impl Fn(Tensor<4>) -> Tensor<2>,
    data: &ClassificationData,
    device: &Device,
) -> Vec<i64> {
    let mut out = Vec::new();
    for batch in data.batches(512, None, device) {
        let p = logits(batch.images)
            .argmax(1)
            .flatten::<1>(0, 1)
            .into_data();
        out.extend(p.convert::<i64>().try_into_vec::<i64>().expect("int data"));
    }
    out
}

/// Median milliseconds of `f` over `repeats` runs (one warm-up).
fn time_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Adam training of `model`'s trainable parameters with `logits`.
fn train<M: Module>(
    mut model: M,
    logits: impl Fn(&M, Tensor<4>) -> Tensor<2>,
    data: &ClassificationData,
    epochs: usize,
    lr: f64,
    cli: &Cli,
    device: &Device,
) -> M {
    let mut optim = AdamConfig::new().init();
    for epoch in 0..epochs {
        for batch in data.batches(cli.batch_size, Some(cli.seed + epoch as u64), device) {
            let loss = loss_of(logits(&model, batch.images.clone()), batch.targets.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
    }
    model
}

/// Observers of the two layer inputs over the first calibration batches of the training set.
fn calibrate(
    mlp: &Mlp,
    spec: QuantSpec,
    data: &ClassificationData,
    cli: &Cli,
    device: &Device,
) -> Result<(Observer, Observer), String> {
    let mut input = Observer::new("input", spec).map_err(|e| e.to_string())?;
    let mut hidden = Observer::new("hidden", spec).map_err(|e| e.to_string())?;
    for batch in data
        .batches(cli.batch_size, Some(cli.seed), device)
        .take(cli.calibration_batches)
    {
        let x: Tensor<2> = batch.images.flatten(1, 3);
        input.observe(&x);
        hidden.observe(&relu(mlp.hidden.forward(x)));
    }
    Ok((input, hidden))
}

/// `2/8`: the per-layer widths of an allocation, in layer order.
fn mixed_label_of(bits: &BTreeMap<String, u32>) -> String {
    ["hidden", "output"]
        .iter()
        .filter_map(|l| bits.get(*l))
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `burn Q8F`, `f32 (simulated)` or a mix, for a list of storage decisions.
fn storage(stored: &[Stored]) -> String {
    let mut kinds: Vec<String> = stored
        .iter()
        .map(|s| match s {
            Stored::Native(scheme) => format!("burn {:?}", scheme.value),
            Stored::Simulated(_) => "f32 (simulated)".to_string(),
        })
        .collect();
    kinds.dedup();
    kinds.join(" + ")
}

fn float_bits<M: Module>(model: &M) -> u64 {
    model.num_params() as u64 * 32
}

/// Stored size of a model whose selected weights are quantized: their reported size plus 32 bits
/// for every other parameter.
fn mixed_bits(total_params: usize, quantized_params: usize, quantized_bits: u64) -> u64 {
    (total_params - quantized_params) as u64 * 32 + quantized_bits
}

fn run(cli: &Cli) -> Result<(), String> {
    let total = Instant::now();
    let cpu = Device::flex();
    let device = cpu.clone().autodiff();
    let (train_data, test_data) = digits_split(cli.seed);
    device.seed(cli.seed);
    let config = MlpConfig::new(64).with_hidden(cli.hidden);
    println!(
        "training a {}-64-{}-10 MLP on {} digits for {} epochs ...",
        64, cli.hidden, train_data.n, cli.epochs
    );
    let mlp = train(
        config.init(&device),
        |m: &Mlp, x| m.forward(x),
        &train_data,
        cli.epochs,
        1e-3,
        cli,
        &device,
    );
    let float_model = mlp.valid();
    let n_params = float_model.num_params();
    let n_weights = 64 * cli.hidden + cli.hidden * 10;
    let weights = Targets::names(["hidden", "output"]);
    let mut rows = Vec::new();
    let timed = |f: &dyn Fn(Tensor<4>) -> Tensor<2>| {
        let images = test_data
            .batches(test_data.n, None, &cpu)
            .next()
            .expect("test set")
            .images;
        time_ms(cli.repeats, || {
            let _ = f(images.clone()).into_data();
        })
    };

    // float32
    let (loss, accuracy) = evaluate(|x| float_model.forward(x), &test_data, &cpu);
    let float_acc = accuracy;
    rows.push(Row {
        scheme: "float32".into(),
        bits: "W32 A32".into(),
        stored: "f32".into(),
        size_bits: float_bits(&float_model),
        loss,
        accuracy,
        cpu_ms: timed(&|x| float_model.forward(x)),
    });

    // PTQ W8A8 and W4 g16 A8
    let act8 = QuantSpec::int8().affine();
    let (obs_in, obs_hidden) = calibrate(&float_model, act8, &train_data, cli, &cpu)?;
    let act_points = |learned: bool, dev: &Device| {
        (
            Some(ActivationQuant::from_observer(&obs_in, learned, dev)),
            Some(ActivationQuant::from_observer(&obs_hidden, learned, dev)),
        )
    };
    let ptq_specs = [
        ("PTQ W8A8 (per-tensor, min-max)", "W8 A8", QuantSpec::int8()),
        (
            "PTQ W8A8 (per-channel, min-max)",
            "W8 A8",
            QuantSpec::int8().per_channel(1),
        ),
        (
            "PTQ W4A8 (group 16, MSE clip)",
            "W4 A8",
            QuantSpec::int4().per_group(0, 16).clipping(Clipping::mse()),
        ),
    ];
    // One PTQ row: weights by `config`, int8 activations from the observers.
    let ptq_row =
        |scheme: String, bits: String, config: &PtqConfig| -> Result<(Row, PtqReport), String> {
            let (quantized, report) =
                quantize_weights(&float_model, config).map_err(|e| e.to_string())?;
            let (input, hidden) = act_points(false, &cpu);
            let model = QuantMlp {
                mlp: quantized,
                input,
                hidden,
            };
            let (loss, accuracy) = evaluate(|x| model.logits(x), &test_data, &cpu);
            let layer_storage: Vec<Stored> =
                report.layers.iter().map(|l| l.stored.clone()).collect();
            let row = Row {
                scheme,
                bits,
                stored: storage(&layer_storage),
                size_bits: mixed_bits(n_params, n_weights, report.size_bits()),
                loss,
                accuracy,
                cpu_ms: timed(&|x| model.logits(x)),
            };
            Ok((row, report))
        };
    let mut ptq_reports = Vec::new();
    for (name, bits, spec) in ptq_specs {
        let config = PtqConfig::new(weights.clone(), spec);
        let (row, report) = ptq_row(name.into(), bits.into(), &config)?;
        rows.push(row);
        ptq_reports.push((name, report));
    }

    // QAT W4A8 with learned steps
    let qat = prepare_qat(
        mlp.clone(),
        &QatConfig {
            targets: weights.clone(),
            spec: QuantSpec::int4().per_channel(1),
            learned_scale: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let (input, hidden) = act_points(true, &device);
    let qat_model = train(
        QuantMlp {
            mlp: qat,
            input,
            hidden,
        },
        |m: &QuantMlp, x| m.logits(x),
        &train_data,
        cli.qat_epochs,
        2e-4,
        cli,
        &device,
    )
    .valid();
    let fake_predictions = predictions(|x| qat_model.logits(x), &test_data, &cpu);
    let (exported, stored) = export_qat(qat_model.mlp.clone());
    let exported = QuantMlp {
        mlp: exported,
        input: qat_model.input.clone(),
        hidden: qat_model.hidden.clone(),
    };
    let exported_predictions = predictions(|x| exported.logits(x), &test_data, &cpu);
    let agree = fake_predictions
        .iter()
        .zip(&exported_predictions)
        .filter(|(a, b)| a == b)
        .count();
    let (loss, accuracy) = evaluate(|x| exported.logits(x), &test_data, &cpu);
    let qat_bits: u64 = [(64usize, cli.hidden), (cli.hidden, 10)]
        .iter()
        .map(|&(i, o)| (i * o * 4 + o * 32) as u64)
        .sum();
    rows.push(Row {
        scheme: "QAT W4A8 (LSQ, per-channel) exported".into(),
        bits: "W4 A8".into(),
        stored: storage(&stored.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()),
        size_bits: mixed_bits(n_params, n_weights, qat_bits),
        loss,
        accuracy,
        cpu_ms: timed(&|x| exported.logits(x)),
    });

    // llama.cpp GGUF blocks (weights only): blocks of 32 along each output row's inputs
    for ty in [GgufType::Q8_0, GgufType::Q4_0] {
        let (model, size_bits) = gguf_model(&float_model, ty)?;
        let (loss, accuracy) = evaluate(|x| model.forward(x), &test_data, &cpu);
        rows.push(Row {
            scheme: format!("GGUF {} blocks (llama.cpp)", ty.name()),
            bits: format!("W{:.1} A32", ty.bits_per_weight()),
            stored: "f32 (simulated)".into(),
            size_bits: mixed_bits(n_params, n_weights, size_bits),
            loss,
            accuracy,
            cpu_ms: timed(&|x| model.forward(x)),
        });
    }

    // DGQ A8W4
    let dgq = DgqModel::calibrate(&float_model, &train_data, cli, &cpu)?;
    let test_x = host_images(&test_data);
    let logits = dgq.forward(&test_x, test_data.n)?;
    let logits_t = Tensor::<2>::from_data(TensorData::new(logits, [test_data.n, 10]), &cpu);
    let targets = test_data
        .batches(test_data.n, None, &cpu)
        .next()
        .expect("test set")
        .targets;
    let loss = loss_of(logits_t.clone(), targets.clone()).into_scalar::<f64>();
    let accuracy = 100.0
        * logits_t
            .argmax(1)
            .flatten::<1>(0, 1)
            .equal(targets)
            .int()
            .sum()
            .into_scalar::<i64>() as f64
        / test_data.n as f64;
    rows.push(Row {
        scheme: "DGQ A8W4 (g16, INT8 CPU kernel)".into(),
        bits: "W4/8 A8".into(),
        stored: "host int4/int8".into(),
        size_bits: mixed_bits(n_params, n_weights, dgq.size_bits()),
        loss,
        accuracy,
        cpu_ms: time_ms(cli.repeats, || {
            let _ = dgq.forward(&test_x, test_data.n);
        }),
    });

    // HAWQ-V2 at two budgets
    let hawq_config = HawqConfig {
        targets: weights.clone(),
        spec: QuantSpec::int8().per_channel(1).clipping(Clipping::mse()),
        candidate_bits: vec![2, 4, 8],
        probes: cli.probes,
    };
    let batch = train_data
        .batches(512, Some(cli.seed), &device)
        .next()
        .expect("a training batch");
    let grad = |m: &Mlp| {
        let loss = loss_of(m.forward(batch.images.clone()), batch.targets.clone());
        GradientsParams::from_grads(loss.backward(), m)
    };
    device.seed(cli.seed);
    let sensitivities =
        weight_sensitivities(&mlp, &hawq_config, grad).map_err(|e| e.to_string())?;
    let mut hawq_lines = Vec::new();
    let mut mixed_bits_plan = BTreeMap::new();
    let mut plan3 = None;
    for avg_bits in [4.0f64, 3.0] {
        let budget = (avg_bits * n_weights as f64) as u64;
        let plan = HawqPlan::new(sensitivities.clone(), &hawq_config, budget)
            .map_err(|e| e.to_string())?;
        let bits: Vec<String> = plan.allocation.bits.iter().map(|b| b.to_string()).collect();
        mixed_bits_plan = sensitivities
            .iter()
            .map(|s| s.name.clone())
            .zip(plan.allocation.bits.iter().copied())
            .collect();
        hawq_lines.push(format!(
            "HAWQ-V2 @ {avg_bits} bits/weight: traces/n {:?}, bits (hidden, output) = ({}), omega {:.3e}",
            sensitivities
                .iter()
                .map(|s| format!("{:.3e}", s.avg_hessian_trace))
                .collect::<Vec<_>>(),
            bits.join(", "),
            plan.allocation.omega
        ));
        let (row, _) = ptq_row(
            format!("HAWQ-V2 @ {avg_bits} bits/weight"),
            format!("W{} A8", bits.join("/")),
            &plan.ptq_config(),
        )?;
        rows.push(row);
        plan3 = Some(plan.ptq_config());
    }

    // HAWQ-V2 for activations (§3.4): traces with respect to the two layer inputs, bits from
    // {4, 8} under an average of 6 bits per activation element, on the 3-bit weight plan.
    let x: Tensor<2> = batch.images.clone().flatten(1, 3);
    let h = relu(mlp.hidden.forward(x.clone())).detach();
    device.seed(cli.seed);
    let t_in = activation_trace(x.clone(), cli.probes, |a| {
        loss_of(mlp.forward_flat(a), batch.targets.clone())
    });
    let t_hidden = activation_trace(h.clone(), cli.probes, |a| {
        loss_of(mlp.output.forward(a), batch.targets.clone())
    });
    let act_candidates = [4u32, 8];
    let act_layers = vec![
        activation_sensitivity("input", x, t_in, &act8, &act_candidates)
            .map_err(|e| e.to_string())?,
        activation_sensitivity("hidden", h, t_hidden, &act8, &act_candidates)
            .map_err(|e| e.to_string())?,
    ];
    let act_budget = 6 * act_layers.iter().map(|l| l.n_params as u64).sum::<u64>();
    let act_plan = allocate(&act_layers, &act_candidates, act_budget).map_err(|e| e.to_string())?;
    let (b_in, b_hidden) = (act_plan.bits[0], act_plan.bits[1]);
    hawq_lines.push(format!(
        "HAWQ-V2 activations @ 6 bits/element: traces/n (input, hidden) = ({:.3e}, {:.3e}), bits = ({b_in}, {b_hidden})",
        act_layers[0].avg_hessian_trace, act_layers[1].avg_hessian_trace
    ));
    let plan3 = plan3.expect("the 3-bit weight plan");
    let (quantized, report) = quantize_weights(&float_model, &plan3).map_err(|e| e.to_string())?;
    let (obs_in, _) = calibrate(&float_model, act8.with_bits(b_in), &train_data, cli, &cpu)?;
    let (_, obs_hidden) = calibrate(
        &float_model,
        act8.with_bits(b_hidden),
        &train_data,
        cli,
        &cpu,
    )?;
    let model = QuantMlp {
        mlp: quantized,
        input: Some(ActivationQuant::from_observer(&obs_in, false, &cpu)),
        hidden: Some(ActivationQuant::from_observer(&obs_hidden, false, &cpu)),
    };
    let (loss, accuracy) = evaluate(|x| model.logits(x), &test_data, &cpu);
    rows.push(Row {
        scheme: "HAWQ-V2 @ 3 bits/weight, 6 bits/activation".into(),
        bits: format!("W{} A{b_in}/{b_hidden}", mixed_label_of(&mixed_bits_plan)),
        stored: storage(
            &report
                .layers
                .iter()
                .map(|l| l.stored.clone())
                .collect::<Vec<_>>(),
        ),
        size_bits: mixed_bits(n_params, n_weights, report.size_bits()),
        loss,
        accuracy,
        cpu_ms: timed(&|x| model.logits(x)),
    });

    // Double Rounding: joint 8/6/4/2 training with ALRS plus one Hessian-aware mixed-precision
    // step per batch (HASB), then 8 bits, 4 bits and HAWQ-V2's 3-bit mix from one int8 store.
    let (dr, switch) =
        prepare_double_rounding(mlp.clone(), &weights, QuantSpec::int8().per_channel(1))
            .map_err(|e| e.to_string())?;
    let traces: Vec<f64> = sensitivities.iter().map(|s| s.avg_hessian_trace).collect();
    let hasb = Hasb::new(&traces, vec![2, 4, 6, 8], 3.0);
    let dr = train_double_rounding(dr, &switch, &hasb, &train_data, cli, &device);
    let store = StoredModel::capture(&dr);
    let uniform = |bits: u32| (format!("{bits}-bit"), BTreeMap::new(), bits);
    let mixed_label = mixed_label_of(&mixed_bits_plan);
    for (label, assignment, default_bits) in [
        uniform(8),
        uniform(4),
        (
            format!("mixed {mixed_label} (HAWQ @ 3)"),
            mixed_bits_plan.clone(),
            8,
        ),
    ] {
        let model = store.model_at(dr.valid(), &assignment, default_bits);
        let (loss, accuracy) = evaluate(|x| model.forward(x), &test_data, &cpu);
        let bits = if assignment.is_empty() {
            default_bits.to_string()
        } else {
            mixed_label.clone()
        };
        rows.push(Row {
            scheme: format!("Double Rounding {label} from int8"),
            bits: format!("W{bits} A32"),
            stored: "int8 store → f32".into(),
            size_bits: mixed_bits(n_params, n_weights, store.size_bits()),
            loss,
            accuracy,
            cpu_ms: timed(&|x| model.forward(x)),
        });
    }

    println!();
    println!(
        "{:<46} {:>9} {:<17} {:>9} {:>8} {:>7} {:>7} {:>7}",
        "scheme", "bits", "weights stored as", "size KiB", "loss", "acc %", "Δ pts", "CPU ms"
    );
    for r in &rows {
        println!(
            "{:<46} {:>9} {:<17} {:>9.1} {:>8.4} {:>7.2} {:>+7.2} {:>7.2}",
            r.scheme,
            r.bits,
            r.stored,
            r.size_bits as f64 / 8192.0,
            r.loss,
            r.accuracy,
            r.accuracy - float_acc,
            r.cpu_ms
        );
    }
    println!();
    println!(
        "QAT export: exported model predicts the fake-quantized model's class on {agree}/{} test images; weights stored as {}",
        fake_predictions.len(),
        stored
            .iter()
            .map(|(l, s)| format!("{l}: {}", s.label()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in &hawq_lines {
        println!("{line}");
    }
    for (name, report) in &ptq_reports {
        println!("\n{name}:\n{report}");
    }
    println!(
        "test set: {} images; CPU time: one forward over the test set on flex, median of {}; total {:.1} s",
        test_data.n,
        cli.repeats,
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Joint multi-precision training: every batch is seen at 8, 6, 4 and 2 bits in turn and once
/// at a per-layer mix sampled by HASB; the weights step with Adam at the base lr, the shared
/// steps with Adam at the base lr scaled by ALRS for that width (the lowest width of a mix).
fn train_double_rounding(
    mut model: Mlp,
    switch: &BitSwitch,
    hasb: &Hasb,
    data: &ClassificationData,
    cli: &Cli,
    device: &Device,
) -> Mlp {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cli.seed);
    let step_ids = step_params(&model);
    let mut weight_optim = AdamConfig::new().init();
    let mut step_optim = AdamConfig::new().init();
    let mut alrs = Alrs::new(8);
    let lr = 2e-4;
    for epoch in 0..cli.qat_epochs {
        for batch in data.batches(cli.batch_size, Some(cli.seed + 100 + epoch as u64), device) {
            let mixed = hasb.sample(&mut rng);
            let widths = [vec![8u32], vec![6], vec![4], vec![2], mixed];
            for layer_bits in widths {
                if layer_bits.len() == 1 {
                    switch.set_all(layer_bits[0]);
                } else {
                    switch.set_each(&layer_bits);
                }
                let bits = *layer_bits.iter().min().expect("a width");
                let loss = loss_of(model.forward(batch.images.clone()), batch.targets.clone());
                let mut grads = GradientsParams::from_grads(loss.backward(), &model);
                let mut step_grads = GradientsParams::new();
                let mut norm2 = 0.0;
                for &id in &step_ids {
                    if let Some(g) = grads.remove::<2>(id) {
                        norm2 += g.clone().square().sum().into_scalar::<f64>();
                        step_grads.register(id, g);
                    }
                }
                let factor = alrs.observe(bits, norm2.sqrt());
                model = weight_optim.step(lr, model, grads);
                model = step_optim.step(lr * factor, model, step_grads);
            }
        }
    }
    model
}

/// The ids of the Double-Rounding step parameters (`<layer>.weight.double_rounding.step`).
fn step_params<M: Module>(model: &M) -> Vec<ParamId> {
    struct Steps {
        path: Vec<String>,
        ids: Vec<ParamId>,
    }
    impl ModuleVisitor for Steps {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.path.join(".").ends_with("double_rounding.step") {
                self.ids.push(param.id);
            }
        }
    }
    let mut steps = Steps {
        path: Vec::new(),
        ids: Vec::new(),
    };
    model.visit(&mut steps);
    steps.ids
}

/// The MLP with every weight replaced by its GGUF `ty` round trip (stored size: the packed bytes).
fn gguf_model(mlp: &Mlp, ty: GgufType) -> Result<(Mlp, u64), String> {
    let mut model = mlp.clone();
    let mut bits = 0u64;
    for linear in [&mut model.hidden, &mut model.output] {
        // GGUF blocks run along the rows of PyTorch's [out, in]: Burn's [in, out] transposed.
        let w = linear.weight.val().transpose();
        let [rows, cols] = w.dims();
        let blocks = quantize(ty, &host(w.clone()), rows, cols).map_err(|e| e.to_string())?;
        bits += blocks.to_bytes().len() as u64 * 8;
        let values = TensorData::new(blocks.dequantize(), [rows, cols]);
        let w = Tensor::<2>::from_data(values, &w.device()).transpose();
        linear.weight = Param::initialized(linear.weight.id, w);
    }
    Ok((model, bits))
}

fn host_images(data: &ClassificationData) -> Vec<f32> {
    (0..data.n).flat_map(|i| data.image(i).to_vec()).collect()
}

/// The MLP in DGQ's A8W4 format, run on the host with the INT8 reference kernel.
struct DgqModel {
    layers: Vec<(DgqWeight, Vec<f32>)>,
    percentile: f32,
}

impl DgqModel {
    fn calibrate(
        mlp: &Mlp,
        data: &ClassificationData,
        cli: &Cli,
        device: &Device,
    ) -> Result<Self, String> {
        let calib = data.take((cli.calibration_batches * cli.batch_size).min(data.n));
        let x = Tensor::<2>::from_data(TensorData::new(host_images(&calib), [calib.n, 64]), device);
        let h = relu(mlp.hidden.forward(x.clone()));
        let config = DgqConfig {
            group_size: 16,
            w4w8: true,
        };
        let mut layers = Vec::new();
        for (linear, input) in [(&mlp.hidden, x), (&mlp.output, h)] {
            // DGQ works on PyTorch's [out, in] weight; Burn stores [in, out].
            let w = linear.weight.val().transpose();
            let [rows, cols] = w.dims();
            let w = host(w);
            let acts = host(input);
            let q =
                dgq_quantize(&w, rows, cols, &acts, calib.n, &config).map_err(|e| e.to_string())?;
            let bias = linear
                .bias
                .as_ref()
                .map(|b| host(b.val()))
                .unwrap_or_else(|| vec![0.0; rows]);
            layers.push((q, bias));
        }
        Ok(Self {
            layers,
            percentile: 99.9,
        })
    }

    fn size_bits(&self) -> u64 {
        // 4-bit codes, an INT8 scale and 4-bit zero per group, an f32 coarse scale per row.
        self.layers
            .iter()
            .map(|(q, _)| {
                let groups = (q.rows * q.cols / q.group_size) as u64;
                (q.rows * q.cols) as u64 * 4 + groups * 12 + q.rows as u64 * 32
            })
            .sum()
    }

    fn forward(&self, x: &[f32], tokens: usize) -> Result<Vec<f32>, String> {
        let mut act = x.to_vec();
        for (i, (q, bias)) in self.layers.iter().enumerate() {
            let (codes, scale) =
                quantize_activations_int8(&act, self.percentile).map_err(|e| e.to_string())?;
            let mut out = q
                .matmul_a8w4(&codes, scale, tokens)
                .map_err(|e| e.to_string())?;
            for (j, v) in out.iter_mut().enumerate() {
                *v += bias[j % q.rows];
                if i + 1 < self.layers.len() {
                    *v = v.max(0.0);
                }
            }
            act = out;
        }
        Ok(act)
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data")
}
