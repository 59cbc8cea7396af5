//! What autoj asks of a CUDA device beyond candle: that its memory pool keep what it has
//! allocated, and how much of its memory is in use, read from the device itself. Off CUDA
//! (and in a build without the `cuda` feature) both do nothing.
//!
//! candle allocates through cudarc with stream-ordered allocation (`cuMemAllocAsync`) from
//! the device's current memory pool. The pool's release threshold is 0 unless set, so at
//! every synchronization (a decode step reads its logits back: one a step) the pool hands
//! its free memory back to the driver, and the next step allocates it again. A threshold
//! of "everything" keeps it: a step reuses the last step's memory, and the memory in use
//! settles at the peak of the steps, so a growth after warm-up is memory really held.

use candle_core::Device;

/// Free and total memory of a device, in bytes, as its driver reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Bytes no context holds.
    pub free: u64,
    /// Bytes on the card.
    pub total: u64,
}

impl MemoryInfo {
    /// Bytes held by every context on the card (this process's and any other).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }
}

/// The device's free and total memory (`cuMemGetInfo`); `None` off CUDA.
pub fn memory_info(device: &Device) -> anyhow::Result<Option<MemoryInfo>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = cuda::mem_get_info(d)?;
            Ok(Some(MemoryInfo {
                free: free as u64,
                total: total as u64,
            }))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Ok(None),
        Device::Cpu | Device::Metal(_) => Ok(None),
    }
}

/// Sets the release threshold of the device's memory pool to its maximum, so freed memory
/// stays in the pool for the next step instead of going back to the driver at each
/// synchronization. Called where the device is opened (`--device cuda:N`); a driver that
/// refuses leaves the default behaviour, said once in the log.
pub fn keep_pool_memory(device: &Device) {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            if let Err(e) = cuda::keep_pool_memory(d) {
                tracing::warn!(
                    error = %e,
                    "the CUDA memory pool's release threshold was not set: freed memory goes \
                     back to the driver at each synchronization"
                );
            }
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => {}
        Device::Cpu | Device::Metal(_) => {}
    }
}

/// The driver calls, through the cudarc that candle re-exports (so its version is candle's).
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{result, sys, DriverError};
    use candle_core::CudaDevice;

    /// `(free, total)` bytes of the device's context.
    pub(super) fn mem_get_info(d: &CudaDevice) -> Result<(usize, usize), DriverError> {
        d.cuda_stream().context().mem_get_info()
    }

    /// `CU_MEMPOOL_ATTR_RELEASE_THRESHOLD` = `u64::MAX` on the pool `cuMemAllocAsync`
    /// allocates from (the device's current one); nothing where the device has no pools
    /// (cudarc then allocates with plain `cuMemAlloc`).
    #[allow(unsafe_code)]
    pub(super) fn keep_pool_memory(d: &CudaDevice) -> Result<(), DriverError> {
        let stream = d.cuda_stream();
        let ctx = stream.context();
        if !ctx.has_async_alloc() {
            return Ok(());
        }
        let mut threshold: u64 = u64::MAX;
        // SAFETY: `cu_device()` is the device cudarc got from `cuDeviceGet` for this live
        // context; `cuDeviceGetMemPool` returns that device's current pool, which lives as
        // long as the device. The release threshold attribute is a `cuuint64_t`, and
        // `threshold` is a `u64` that outlives the call, which only reads it.
        unsafe {
            let pool = result::device::get_mem_pool(ctx.cu_device())?;
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute_enum::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_and_no_pool() {
        assert_eq!(memory_info(&Device::Cpu).unwrap(), None);
        keep_pool_memory(&Device::Cpu);
    }

    #[test]
    fn used_memory_is_what_is_not_free() {
        let m = MemoryInfo {
            free: 30 << 30,
            total: 80 << 30,
        };
        assert_eq!(m.used(), 50 << 30);
    }
}
