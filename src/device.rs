//! Run-time device selection among the backends compiled in.
//!
//! Every example, test and bench takes its device by name (`--device flex|ndarray|wgpu|vulkan|
//! metal|cuda`). A backend is only available when the matching Cargo feature of `firebox` was
//! enabled at build time; asking for one that was not compiled is an error that names the feature
//! to enable, never a silent fallback.

use burn::tensor::Device;

/// A backend that firebox can be built with, by Cargo feature of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName {
    /// Burn's pure-Rust CPU backend (`flex`, the default feature).
    Flex,
    /// Burn's classic ndarray CPU backend (`ndarray` feature).
    Ndarray,
    /// WebGPU through wgpu: Vulkan, Metal, DX12 or a software Vulkan driver (`wgpu` feature).
    Wgpu,
    /// wgpu restricted to Vulkan with SPIR-V kernels (`vulkan` feature).
    Vulkan,
    /// wgpu restricted to Metal with MSL kernels (`metal` feature).
    Metal,
    /// NVIDIA CUDA (`cuda` feature).
    Cuda,
}

impl BackendName {
    /// Every backend name, in the order `--device` help lists them.
    pub const ALL: [BackendName; 6] = [
        BackendName::Flex,
        BackendName::Ndarray,
        BackendName::Wgpu,
        BackendName::Vulkan,
        BackendName::Metal,
        BackendName::Cuda,
    ];

    /// The name used on the command line, which is also the Cargo feature's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Flex => "flex",
            BackendName::Ndarray => "ndarray",
            BackendName::Wgpu => "wgpu",
            BackendName::Vulkan => "vulkan",
            BackendName::Metal => "metal",
            BackendName::Cuda => "cuda",
        }
    }

    /// Whether this build has the backend compiled in.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendName::Flex => cfg!(feature = "flex"),
            BackendName::Ndarray => cfg!(feature = "ndarray"),
            BackendName::Wgpu => cfg!(feature = "wgpu"),
            BackendName::Vulkan => cfg!(feature = "vulkan"),
            BackendName::Metal => cfg!(feature = "metal"),
            BackendName::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether the backend runs on a GPU adapter that may be absent at run time.
    pub fn needs_adapter(self) -> bool {
        !matches!(self, BackendName::Flex | BackendName::Ndarray)
    }

    /// The backends compiled into this build.
    pub fn compiled() -> Vec<BackendName> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|b| b.as_str()).collect();
                format!(
                    "unknown device `{s}`: expected one of {} (`cpu`, CubeCL's LLVM CPU backend, \
                     is not supported because it cannot be built offline)",
                    names.join(", ")
                )
            })
    }
}

/// Parses a `--device` value and returns the device, or an error naming the problem.
///
/// The returned device does not track gradients; call [`Device::autodiff`] for training.
pub fn parse_device(name: &str) -> Result<Device, String> {
    let backend: BackendName = name.parse()?;
    device_for(backend)
}

/// The default device of a backend, or an error naming the Cargo feature it needs.
pub fn device_for(backend: BackendName) -> Result<Device, String> {
    if !backend.is_compiled() {
        let compiled: Vec<_> = BackendName::compiled().iter().map(|b| b.as_str()).collect();
        return Err(format!(
            "device `{backend}` is not compiled into this build: rebuild with `--features {backend}` \
             (compiled in: {})",
            compiled.join(", ")
        ));
    }
    Ok(compiled_device(backend))
}

#[allow(unreachable_code)]
fn compiled_device(backend: BackendName) -> Device {
    match backend {
        BackendName::Flex => {
            #[cfg(feature = "flex")]
            return Device::flex();
        }
        BackendName::Ndarray => {
            // Burn 0.22 deprecates ndarray in favour of flex; firebox still supports and tests it.
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Device::ndarray();
        }
        BackendName::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        }
        BackendName::Vulkan => {
            #[cfg(feature = "vulkan")]
            return Device::vulkan(burn::tensor::DeviceKind::DefaultDevice);
        }
        BackendName::Metal => {
            #[cfg(feature = "metal")]
            return Device::metal(burn::tensor::DeviceKind::DefaultDevice);
        }
        BackendName::Cuda => {
            #[cfg(feature = "cuda")]
            return Device::cuda(0);
        }
    }
    unreachable!("device_for checks that backend `{backend}` is compiled in")
}

/// The outcome of checking whether a backend can run here.
#[derive(Clone, Debug)]
pub enum Availability {
    /// The backend runs; the string describes the adapter (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    Ready(Device, String),
    /// The backend cannot run here; the string says why.
    Unavailable(String),
}

/// Checks that a backend is compiled in and that its adapter exists, by opening the device and
/// running one tiny computation. A missing GPU adapter is reported, not a panic.
pub fn probe(backend: BackendName) -> Availability {
    let device = match device_for(backend) {
        Ok(device) => device,
        Err(reason) => return Availability::Unavailable(reason),
    };
    if !backend.needs_adapter() {
        return Availability::Ready(device, format!("{backend} (CPU)"));
    }
    let probe_device = device.clone();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        let sum: f32 = burn::tensor::Tensor::<1>::ones([4], &probe_device)
            .sum()
            .into_scalar::<f32>();
        (sum, adapter_name(&probe_device))
    });
    std::panic::set_hook(previous_hook);
    match result {
        Ok((4.0, name)) => Availability::Ready(device, name),
        Ok((sum, _)) => Availability::Unavailable(format!(
            "{backend} adapter computed 1+1+1+1 = {sum}; refusing to use it"
        )),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            Availability::Unavailable(format!("no usable {backend} adapter: {message}"))
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn adapter_name(device: &Device) -> String {
    device
        .identity()
        .map(|id| format!("{} [{}]", id.name, id.fingerprint))
        .unwrap_or_else(|| "unnamed adapter".into())
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn adapter_name(_device: &Device) -> String {
    "adapter".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_rejected_with_the_list() {
        let err = parse_device("tpu").unwrap_err();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        assert!(err.contains("flex, ndarray"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for backend in BackendName::ALL {
            assert_eq!(backend.as_str().parse::<BackendName>().unwrap(), backend);
        }
    }

    #[test]
    fn uncompiled_backend_names_the_feature() {
        let missing = BackendName::ALL.into_iter().find(|b| !b.is_compiled());
        match missing {
            Some(backend) => {
                let err = device_for(backend).unwrap_err();
                assert!(err.contains(&format!("--features {backend}")), "{err}");
            }
            None => println!("every backend is compiled in; nothing to reject"),
        }
    }
}
