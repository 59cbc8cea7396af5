//! Device memory in use while a step runs, read from the device itself (`cuMemGetInfo`:
//! total less free, so every context on the card counts): readings taken at the step's
//! phases, or every quarter second from a task while clients run. With the memory pool
//! keeping what it frees (`crate::gpu::keep_pool_memory`) the reading after a step is the
//! most that step held, so the peak of the readings is the step's peak. Off CUDA there are
//! no readings and the figures are `null`.

use std::time::{Duration, Instant};

use candle_core::Device;
use serde_json::{json, Value};

use crate::gpu::memory_info;

/// How often [`sample_until`] reads the device.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Readings of the device memory in use, in bytes, with when each was taken.
#[derive(Debug, Default, Clone)]
pub struct MemoryTrack {
    /// `(taken, bytes in use)`, in order.
    readings: Vec<(Instant, u64)>,
}

impl MemoryTrack {
    /// Reads the device's memory in use and keeps it; the bytes, or `None` off CUDA.
    pub fn sample(&mut self, device: &Device) -> anyhow::Result<Option<u64>> {
        let used = memory_info(device)?.map(|m| m.used());
        if let Some(u) = used {
            self.readings.push((Instant::now(), u));
        }
        Ok(used)
    }

    /// Keeps a reading taken elsewhere.
    pub fn record(&mut self, at: Instant, used: u64) {
        self.readings.push((at, used));
    }

    /// The largest reading, MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        self.readings.iter().map(|r| r.1).max().map(mib)
    }

    /// The last reading, MiB.
    pub fn last_mib(&self) -> Option<f64> {
        self.readings.last().map(|r| mib(r.1))
    }

    /// The first reading taken at `at` or later, MiB.
    pub fn first_after_mib(&self, at: Instant) -> Option<f64> {
        self.readings.iter().find(|r| r.0 >= at).map(|r| mib(r.1))
    }

    /// `{"first": .., "peak": .., "last": ..}` in MiB (`null`s without readings).
    pub fn summary(&self) -> Value {
        json!({
            "first": self.readings.first().map(|r| mib(r.1)),
            "peak": self.peak_mib(),
            "last": self.last_mib(),
        })
    }
}

/// Reads the device every [`SAMPLE_EVERY`] until `stop` resolves (or is dropped); the
/// readings. Nothing is read off CUDA. Runs on the async runtime: a reading is one driver
/// call of a few microseconds.
pub async fn sample_until(device: Device, stop: tokio::sync::oneshot::Receiver<()>) -> MemoryTrack {
    let mut track = MemoryTrack::default();
    if !device.is_cuda() {
        return track;
    }
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                if let Err(e) = track.sample(&device) {
                    tracing::warn!(error = %e, "reading the device's memory failed");
                    break;
                }
            }
        }
    }
    track
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_last_and_the_first_reading_after_a_moment() {
        let mut t = MemoryTrack::default();
        let start = Instant::now();
        assert_eq!(t.peak_mib(), None);
        t.record(start, 100 << 20);
        t.record(start + Duration::from_secs(1), 300 << 20);
        t.record(start + Duration::from_secs(2), 200 << 20);
        assert_eq!(t.peak_mib(), Some(300.0));
        assert_eq!(t.last_mib(), Some(200.0));
        assert_eq!(
            t.first_after_mib(start + Duration::from_millis(500)),
            Some(300.0)
        );
        assert_eq!(t.first_after_mib(start + Duration::from_secs(3)), None);
        assert_eq!(t.summary()["first"], 100.0);
    }

    #[test]
    fn the_cpu_gives_no_readings() {
        let mut t = MemoryTrack::default();
        assert_eq!(t.sample(&Device::Cpu).unwrap(), None);
        assert_eq!(t.summary()["peak"], Value::Null);
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let track = runtime.block_on(sample_until(Device::Cpu, stopped));
        assert_eq!(track.peak_mib(), None);
    }
}
