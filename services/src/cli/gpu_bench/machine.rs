//! What the device itself can do, measured with the same candle operations the engine uses:
//! the device-to-device copy rate (the ceiling of a memory-bound decode step) and the
//! throughput of a large matrix product in the serving dtype (bf16 on CUDA, f32 on the CPU).

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use serde_json::{json, Value};

use crate::config::parse_device;

/// `gpu-bench machine` settings.
#[derive(Debug, Clone, Args)]
pub struct MachineArgs {
    /// Device to measure: `cuda:N` or `cpu`.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cuda:0")]
    pub device: String,
    /// Bytes copied per repetition, in MiB.
    #[arg(long, env = "AUTOJ_GPU_COPY_MIB", default_value_t = 1024)]
    pub copy_mib: usize,
    /// Side of the square matrices multiplied.
    #[arg(long, env = "AUTOJ_GPU_MATMUL_N", default_value_t = 8192)]
    pub matmul_n: usize,
    /// Timed repetitions of each measurement (after one untimed warm-up).
    #[arg(long, env = "AUTOJ_GPU_REPEAT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Print only the JSON object (gpu-check reads the last line either way).
    #[arg(long, env = "AUTOJ_GPU_JSON")]
    pub json: bool,
}

/// Measures the device; the report's `d2d_copy_gbps` counts bytes read plus bytes written.
pub fn run(args: &MachineArgs) -> anyhow::Result<Value> {
    let device = parse_device(&args.device)?;
    let dtype = serving_dtype(&device);
    let copy = copy_gbps(&device, args.copy_mib << 20, args.repeat)?;
    let matmul = matmul_tflops(&device, dtype, args.matmul_n, args.repeat)?;
    if !args.json {
        eprintln!(
            "{}: copy {copy:.1} GB/s (read + write), {dtype:?} matmul {matmul:.2} TFLOP/s",
            args.device
        );
    }
    let key = format!("{}_matmul_tflops", dtype.as_str());
    let mut report = json!({
        "passed": copy > 0.0 && matmul > 0.0,
        "device": args.device,
        "dtype": dtype.as_str(),
        "d2d_copy_gbps": copy,
    });
    report[key] = json!(matmul);
    Ok(report)
}

/// bf16 where the hardware serves it (CUDA), else f32.
pub fn serving_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Seconds `f` takes, averaged over `repeat` runs after one warm-up, the device synchronized
/// around the timed runs so queued kernels are counted.
fn timed(
    device: &Device,
    repeat: u32,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> anyhow::Result<f64> {
    f()?;
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..repeat {
        // Each result is dropped at once: its buffer goes back before the next run.
        f()?;
    }
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() / f64::from(repeat))
}

/// Copy rate of a `bytes`-long buffer into a new one, in GB/s of memory traffic (read + write).
pub(super) fn copy_gbps(device: &Device, bytes: usize, repeat: u32) -> anyhow::Result<f64> {
    let src = Tensor::zeros(bytes / 4, DType::F32, device).context("allocating the copy buffer")?;
    let secs = timed(device, repeat, || src.copy())?;
    Ok(2.0 * bytes as f64 / secs / 1e9)
}

/// Throughput of an `n`×`n` by `n`×`n` product in `dtype`, in TFLOP/s.
fn matmul_tflops(device: &Device, dtype: DType, n: usize, repeat: u32) -> anyhow::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let secs = timed(device, repeat, || a.matmul(&b))?;
    Ok(2.0 * (n as f64).powi(3) / secs / 1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_report_on_the_cpu_has_the_fields_gpu_check_reads() {
        let args = MachineArgs {
            device: "cpu".into(),
            copy_mib: 8,
            matmul_n: 64,
            repeat: 2,
            json: true,
        };
        let report = run(&args).unwrap();
        assert_eq!(report["passed"], true);
        assert_eq!(report["dtype"], "f32");
        assert!(report["d2d_copy_gbps"].as_f64().unwrap() > 0.0);
        assert!(report["f32_matmul_tflops"].as_f64().unwrap() > 0.0);
    }
}
