//! Which kernel family runs on this CPU: the AVX-512 VNNI tiles or not (the 256-bit and
//! portable kernels pick among themselves in `blocks.rs`). Apart from `mod.rs` so the
//! kernels and the vector math ask it without importing the module that holds the matrices.

/// Whether the AVX-512 VNNI kernels run: when the CPU has them and `AUTOJ_Q4_1_KERNEL` does
/// not ask for a 256-bit kernel (`avx2` or `avx-vnni`). Attention follows the same choice.
pub(crate) fn uses_avx512() -> bool {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let forced =
                std::env::var("AUTOJ_Q4_1_KERNEL").is_ok_and(|v| v == "avx2" || v == "avx-vnni");
            super::tiles16::available() && !forced
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}
