//! Reproducible pseudo-random inputs for the CPU backend's unit tests (kernels and
//! attention: attention imports them from here, the lowest layer).

/// `n` values in [-1, 1) from a linear congruential generator: the same for the same seed
/// on every machine, so a failing case can be rerun.
pub fn random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
