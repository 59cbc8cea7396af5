//! The block formats the Q4_1 and Q8_0 kernels read (as GGUF stores them, and the 8-bit
//! activations), the repacking every layout offers, and the row interleave: what the
//! portable, 256-bit and AVX-512 kernels share, in a file they all import and that imports
//! none of them.

use half::f16;

/// Values per quantization block (Q4_1 and Q8_1 alike).
pub const BLOCK: usize = 32;

/// One Q4_1 block exactly as GGUF stores it: `value = d * q + m` for 4-bit `q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub(super) d: f16,
    pub(super) m: f16,
    pub(super) qs: [u8; BLOCK / 2],
}

/// One activation block: `value ≈ d * q`; `s` is `d * Σq`, the term the weights' offset
/// `m` multiplies.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub(super) d: f32,
    pub(super) s: f32,
    pub(super) qs: [i8; BLOCK],
}

/// One Q8_0 block as GGUF stores it: `value = d * q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub(super) d: f16,
    pub(super) qs: [i8; BLOCK],
}

/// A repacked Q4_1 matrix, as stacking (Q, K, V) and the gate/up interleave need it.
pub(super) trait Packed: Sized {
    /// Rows of the parts one after another.
    fn concat(parts: Vec<Self>) -> Self;
    /// Rows of `a` and `b` alternating four at a time; `None` when the result cannot be
    /// repacked (its row count is not a multiple of the layout's group).
    fn interleave4(a: &Self, b: &Self) -> Option<Self>;
    /// Bytes held.
    fn bytes(&self) -> usize;
}

/// Rows of `blocks` (each `row_len` long) of `a` and `b` alternating four at a time.
pub(super) fn interleave4<T: Copy>(a: &[T], b: &[T], row_len: usize) -> Vec<T> {
    let quad = 4 * row_len;
    a.chunks(quad)
        .zip(b.chunks(quad))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect()
}
