//! Reading the state of fake-quantized weights out of a model.
//!
//! Burn's mappers and visitors see a reparameterised parameter without its
//! [`Reparameterization`](burn::module::Reparameterization) (Burn 0.22.1 takes it off around
//! `map_float`/`visit_float` and puts it back afterwards), so the quantization state of a weight
//! cannot be read by path from a visitor. Instead, [`capturing`] runs Burn's own
//! `Module::materialize` with a thread-local sink installed: every reparameterization's
//! `apply` then records its weight's integer codes and parameters (host copies) next to the
//! layer path it was attached at. The sink is removed afterwards, also on panic.

use std::cell::RefCell;

use crate::affine::{Quantized, host};
use crate::spec::QuantSpec;

/// One fake-quantized weight, as its codes and parameters (host copies, row layout).
#[derive(Clone, Debug)]
pub struct Captured {
    /// The layer path.
    pub layer: String,
    /// The scheme.
    pub spec: QuantSpec,
    /// The weight's shape.
    pub dims: Vec<usize>,
    /// Codes in row order.
    pub codes: Vec<i32>,
    /// One scale per row.
    pub scale: Vec<f32>,
    /// One zero point per row.
    pub zero_point: Vec<f32>,
}

impl Captured {
    /// The host copy of a quantized weight.
    pub fn of<const D: usize>(layer: &str, q: &Quantized<D>) -> Self {
        Self {
            layer: layer.to_string(),
            spec: q.spec,
            dims: q.layout.dims.to_vec(),
            codes: host(q.layout.to_rows(q.codes.clone()).into_data())
                .into_iter()
                .map(|v| v as i32)
                .collect(),
            scale: host(q.params.scale.clone().into_data()),
            zero_point: host(q.params.zero_point.clone().into_data()),
        }
    }
}

thread_local! {
    static SINK: RefCell<Option<Vec<Captured>>> = const { RefCell::new(None) };
}

/// Runs `f` with a sink installed and returns its result with everything recorded.
pub(crate) fn capturing<R>(f: impl FnOnce() -> R) -> (R, Vec<Captured>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SINK.with(|s| s.borrow_mut().take());
        }
    }
    SINK.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let _reset = Reset;
    let out = f();
    let captured = SINK.with(|s| s.borrow_mut().take()).unwrap_or_default();
    (out, captured)
}

/// Whether a sink is installed (the reparameterizations then record instead of only computing).
pub(crate) fn active() -> bool {
    SINK.with(|s| s.borrow().is_some())
}

/// Records one weight.
pub(crate) fn record(captured: Captured) {
    SINK.with(|s| {
        if let Some(sink) = s.borrow_mut().as_mut() {
            sink.push(captured);
        }
    });
}
