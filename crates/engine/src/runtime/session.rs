//! The htdemucs network in an ONNX Runtime session.

use std::path::Path;

use ort::ep::cuda::ConvAlgorithmSearch;
use ort::ep::{CPU, CUDA};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{DynTensor, DynTensorValueType, TensorRef};

use super::arena::CpuArena;
use super::library::runtime;
use super::{RuntimeError, RuntimeOptions};
use crate::model::ModelInfo;
use crate::separate::{NetOutput, Network, NetworkError, OutputStore};
use crate::units::{Device, Provider};

/// The htdemucs network in an ONNX Runtime session.
pub struct OrtNetwork {
    session: Session,
    provider: Provider,
    info: ModelInfo,
    /// Dropped after `session` (declaration order).
    _arena: Option<CpuArena>,
}

impl std::fmt::Debug for OrtNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtNetwork").field("provider", &self.provider).field("model", &self.info.id).finish()
    }
}

impl OrtNetwork {
    /// Open `model_path` (described by `info`) on the requested device.
    ///
    /// `Device::Auto` tries CUDA and falls back to CPU; [`OrtNetwork::provider`]
    /// tells which one runs. CPU tensors come from a shared arena (`CpuArena` in this file)
    /// (exact-size growth) instead of the CPU provider's own arena, whose
    /// power-of-two growth measured 3.6 GB peak RSS on htdemucs (2 cores);
    /// memory-pattern planning is off (4.1 GB); graph optimisation stops at
    /// level 2 (see below).
    ///
    /// # Errors
    /// [`RuntimeError`] when the library is missing, the device is unavailable
    /// (`Device::Cuda`), or the model does not have the manifest's interface.
    pub fn open(info: &ModelInfo, model_path: &Path, opts: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let rt = runtime(opts)?;
        let session_err =
            |e: &dyn std::fmt::Display| RuntimeError::Session { path: model_path.to_path_buf(), reason: e.to_string() };
        let threads =
            opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let builder = Session::builder(&rt.env)
            .map_err(|e| session_err(&e))?
            .with_intra_threads(threads)
            .map_err(|e| session_err(&e))?
            // Memory pattern planning pre-allocates for the whole graph: +1.3 GB peak RSS here.
            .with_memory_pattern(false)
            .map_err(|e| session_err(&e))?
            // Level 3 adds the NCHWc layout transform (reorder copies around
            // every convolution): +120 MB peak RSS on htdemucs here, measured
            // with the same time per segment either way (2 cores, AVX-512).
            .with_optimization_level(GraphOptimizationLevel::Level2)
            .map_err(|e| session_err(&e))?
            // Denormals appear inside the network; flushing them made a segment
            // about 20% faster on a 2-core AVX machine, with no audible effect.
            .with_flush_to_zero()
            .map_err(|e| session_err(&e))?;
        let mut builder = builder.with_no_environment_execution_providers().map_err(|e| session_err(&e))?;
        let mut provider = Provider::Cpu;
        // ONNX Runtime opens its CUDA provider libraries itself: one cut
        // short (a power cut, a damaged disk) would crash the process on
        // loading (the loader maps what the file lacks). An install whose
        // stamp records another size for them is not tried.
        let damaged = rt.path.parent().and_then(|dir| {
            [super::gpu::CUDA_PROVIDER_FILE, "libonnxruntime_providers_shared.so"]
                .into_iter()
                .find(|lib| dir.join(lib).is_file() && !super::install::intact(dir, lib))
                .map(|lib| dir.join(lib))
        });
        if let (Some(lib), true) = (&damaged, opts.device != Device::Cpu) {
            let reason =
                format!("{} is damaged (not the size it was installed at): install GPU support again", lib.display());
            if opts.device == Device::Cuda {
                return Err(RuntimeError::DeviceUnavailable { device: "cuda".into(), reason });
            }
            tracing::warn!("CUDA not tried, using CPU: {reason}");
        }
        if opts.device != Device::Cpu && damaged.is_none() {
            // GPU support installed by `install` sits beside the library.
            if let Some(dir) = rt.path.parent() {
                super::gpu::preload(dir);
            }
            // Measured on an H200 (ONNX Runtime 1.31.1, one htdemucs segment,
            // see gpu-check.md): cuDNN's heuristic convolution search runs a
            // segment in 53.0 ms against 61.7 ms with the default exhaustive
            // search, whose first run costs 2.2 s instead of 0.35 s. TF32
            // stays on (ONNX Runtime's default; off: 70.8 ms), within 58-70 dB
            // of the CPU's stems.
            let cuda = CUDA::default()
                .with_conv_algorithm_search(ConvAlgorithmSearch::Heuristic)
                .with_tf32(true)
                .build()
                .error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => {
                    builder = b;
                    provider = Provider::Cuda;
                }
                Err(e) => {
                    // Say why in a person's words when the machine tells
                    // (no driver, old driver, GPU support not installed),
                    // else ONNX Runtime's own reason.
                    let reason = match super::gpu::diagnose(&super::gpu::local_facts_for(Some(&rt.path))) {
                        Err(why) => format!("{} ({e})", why.message()),
                        Ok(()) => e.to_string(),
                    };
                    if opts.device == Device::Cuda {
                        return Err(RuntimeError::DeviceUnavailable { device: "cuda".into(), reason });
                    }
                    tracing::info!("CUDA unavailable, using CPU: {reason}");
                    builder = e.recover();
                }
            }
        }
        let cpu = CPU::default().with_arena_allocator(false).build();
        builder = builder.with_execution_providers([cpu]).map_err(|e| session_err(&e))?;
        let arena = match CpuArena::acquire(&rt.env) {
            Ok(arena) => {
                builder = builder.with_env_allocators().map_err(|e| session_err(&e))?;
                Some(arena)
            }
            Err(e) => {
                tracing::warn!("no shared CPU arena, every run allocates afresh: {e}");
                None
            }
        };
        // Registering CUDA only loads its provider library; the device is
        // set up, and the weights copied to it, here: a driver too old for
        // the runtime, a GPU hidden (`CUDA_VISIBLE_DEVICES=-1`), busy in
        // exclusive mode or out of memory fail now.
        let session = match builder.commit_from_file(model_path) {
            Ok(s) => s,
            Err(e) if provider == Provider::Cuda => {
                // (Without the model's path: a folder named `gpu-models`
                // would read as a CUDA failure.)
                let text = e.to_string().replace(&*model_path.to_string_lossy(), "the model");
                let why = super::gpu::diagnose(&super::gpu::local_facts_for(Some(&rt.path))).err();
                let on_gpu = why.is_some() || is_cuda_failure(&text);
                match (opts.device, on_gpu) {
                    (Device::Cuda, true) => {
                        let reason = match why {
                            Some(why) => format!("{} ({text})", why.message()),
                            None => text,
                        };
                        return Err(RuntimeError::DeviceUnavailable { device: "cuda".into(), reason });
                    }
                    (Device::Cuda, false) => return Err(session_err(&text)),
                    // `auto`: the CPU runs it (and reports a bad model file
                    // as its own error).
                    _ => {
                        tracing::warn!("CUDA could not start the model, using CPU: {text}");
                        drop(arena);
                        return Self::open(info, model_path, &RuntimeOptions { device: Device::Cpu, ..opts.clone() });
                    }
                }
            }
            Err(e) => return Err(session_err(&e)),
        };
        let net = OrtNetwork { session, provider, info: info.clone(), _arena: arena };
        net.check_interface()?;
        Ok(net)
    }

    /// The provider running this session.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    fn check_interface(&self) -> Result<(), RuntimeError> {
        let ins: Vec<&str> = self.session.inputs().iter().map(|o| o.name()).collect();
        let outs: Vec<&str> = self.session.outputs().iter().map(|o| o.name()).collect();
        for want in [&self.info.inputs.mix, &self.info.inputs.spec] {
            if !ins.contains(&want.as_str()) {
                return Err(RuntimeError::Interface(format!("no input '{want}' (model has {ins:?})")));
            }
        }
        for want in [&self.info.outputs.spec, &self.info.outputs.wave] {
            if !outs.contains(&want.as_str()) {
                return Err(RuntimeError::Interface(format!("no output '{want}' (model has {outs:?})")));
            }
        }
        Ok(())
    }
}

/// Whether ONNX Runtime's error `text` comes from the CUDA side (the
/// provider, the CUDA runtime, cuDNN, cuBLAS), not from the model file.
fn is_cuda_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["cuda", "cudnn", "cublas", "cufft", "curand", "gpu", "nvrtc"].iter().any(|w| t.contains(w))
}

/// The output tensors of the last run, kept as ONNX Runtime allocated them
/// (no copy): they return to its allocator when the next run on this
/// storage starts, so on the CPU the arena reuses their memory for that
/// run's activations, as it did when outputs were dropped right after each
/// run. Empty before the first run and after a failed one, whose output
/// nobody reads ([`Network::forward`]).
#[derive(Default)]
struct OrtOutput {
    spec: Option<DynTensor>,
    wave: Option<DynTensor>,
}

impl OutputStore for OrtOutput {
    fn parts(&mut self) -> (&mut [f32], &mut [f32]) {
        fn part(t: &mut Option<DynTensor>) -> &mut [f32] {
            t.as_mut().and_then(|t| t.try_extract_tensor_mut::<f32>().ok()).map_or(&mut [], |(_, d)| d)
        }
        (part(&mut self.spec), part(&mut self.wave))
    }
}

impl Network for OrtNetwork {
    fn new_output(&mut self, _spec_len: usize, _wave_len: usize) -> Result<NetOutput, NetworkError> {
        Ok(NetOutput::from_store(Box::new(OrtOutput::default())))
    }

    /// Two on a GPU (the host's iSTFT and overlap-add overlap the next
    /// segment); one on the CPU, whose cores the network already uses and
    /// where a second output would add 55 MB to the peak.
    fn segments_in_flight(&self) -> usize {
        match self.provider {
            Provider::Cpu => 1,
            _ => 2,
        }
    }

    fn forward(&mut self, mix: &[f32], spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
        let info = &self.info;
        let (s_n, c, l) = (info.sources.len(), info.channels, info.segment_frames);
        let (f, t) = (info.freq_bins(), info.spec_frames());
        let (want_zs, want_xt) = (s_n * 2 * c * f * t, s_n * c * l);
        let inf = |e: ort::Error| NetworkError::Inference(e.to_string());
        let mismatch = |zs: usize, xt: usize| {
            NetworkError::Interface(format!("output sizes {zs} and {xt}, expected {want_zs} and {want_xt}"))
        };
        let mix_t = TensorRef::from_array_view(([1usize, c, l], mix)).map_err(inf)?;
        let spec_t = TensorRef::from_array_view(([1usize, 2 * c, f, t], spec)).map_err(inf)?;
        if let Some(own) = out.store_mut::<OrtOutput>() {
            // Give the previous outputs back before the run allocates new ones.
            (own.spec, own.wave) = (None, None);
        }
        let mut outputs = self
            .session
            .run(ort::inputs![info.inputs.mix.as_str() => mix_t, info.inputs.spec.as_str() => spec_t])
            .map_err(inf)?;
        if let Some(own) = out.store_mut::<OrtOutput>() {
            let mut take = |name: &str| -> Result<DynTensor, NetworkError> {
                outputs
                    .remove(name)
                    .ok_or_else(|| NetworkError::Interface(format!("no output '{name}'")))?
                    .downcast::<DynTensorValueType>()
                    .map_err(|e| NetworkError::Interface(e.to_string()))
            };
            own.spec = Some(take(&info.outputs.spec)?);
            own.wave = Some(take(&info.outputs.wave)?);
            let (zs, xt) = out.parts();
            if zs.len() != want_zs || xt.len() != want_xt {
                return Err(mismatch(zs.len(), xt.len()));
            }
            return Ok(());
        }
        // Storage of another kind (plain vectors): copy into it.
        let (_, zs) = outputs[info.outputs.spec.as_str()].try_extract_tensor::<f32>().map_err(inf)?;
        let (_, xt) = outputs[info.outputs.wave.as_str()].try_extract_tensor::<f32>().map_err(inf)?;
        let (out_zs, out_xt) = out.parts();
        if zs.len() != want_zs || xt.len() != want_xt || out_zs.len() != want_zs || out_xt.len() != want_xt {
            return Err(mismatch(zs.len(), xt.len()));
        }
        out_zs.copy_from_slice(zs);
        out_xt.copy_from_slice(xt);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// ONNX Runtime's errors when CUDA cannot set up the session are told
    /// from a bad model file (which the CPU would refuse too).
    #[test]
    fn cuda_failures_are_told_from_model_errors() {
        for cuda in [
            "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=0",
            "CUDA failure 100: no CUDA-capable device is detected",
            "CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR",
            "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED",
            "Failed to allocate memory for requested buffer of size 123 (CudaCaller)",
        ] {
            assert!(super::is_cuda_failure(cuda), "{cuda}");
        }
        for model in [
            "Load model from x.onnx failed: Protobuf parsing failed.",
            "Node (Conv_12) Op (Conv) [ShapeInferenceError] kernel shape mismatch",
        ] {
            assert!(!super::is_cuda_failure(model), "{model}");
        }
    }
}
