//! What attention reads and how: a cached element type ([`KvValue`]: widened or loaded in
//! SIMD lanes), one head's view of a cache ([`HeadKv`]), a block of query heads sharing it
//! ([`QueryBlock`]) and the prefetch the SIMD kernels use. Apart from `attention.rs`, which
//! picks a kernel, so the AVX2 and AVX-512 kernels import these and `attention.rs` imports
//! the kernels, without a circle.

// `unsafe`: SIMD loads and prefetches, each with its SAFETY argument.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512, _mm_prefetch, _MM_HINT_T0};

use half::f16;

use crate::engine::scheduler::limits::{Q8_BLOCK, Q8_BLOCK_BYTES};

/// A cached key/value element: `f32`, `f16` widened as it is loaded, or `i8` in blocks of
/// 32 values followed by their scale (see [`crate::engine::scheduler::KvType::Q8`]).
pub trait KvValue: Copy + Send + Sync {
    /// Stored elements that a head row of `n` values takes.
    fn stored_len(n: usize) -> usize {
        n
    }

    /// The `out.len()` values of the head row stored in `row`.
    fn widen(row: &[Self], out: &mut [f32]);

    /// Values `8c .. 8c + 8` of the head row stored at `p`, as one 256-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C, and the head row at `p` holds those values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self, c: usize) -> __m256;

    /// Values `16c .. 16c + 16` of the head row stored at `p`, as one 512-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the head row at `p` holds those values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, c: usize) -> __m512;
}

impl KvValue for f32 {
    fn widen(row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&row[..out.len()]);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f32, c: usize) -> __m256 {
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p.add(8 * c)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32, c: usize) -> __m512 {
        // SAFETY: the caller guarantees the row holds values 16c..16c + 16.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p.add(16 * c)) }
    }
}

impl KvValue for f16 {
    fn widen(row: &[f16], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(row) {
            *o = v.to_f32();
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f16, c: usize) -> __m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8 (16 bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(8 * c).cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16, c: usize) -> __m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees the row holds values 16c..16c + 16 (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16 * c).cast())) }
    }
}

impl KvValue for i8 {
    fn stored_len(n: usize) -> usize {
        n.div_ceil(Q8_BLOCK) * Q8_BLOCK_BYTES
    }

    fn widen(row: &[i8], out: &mut [f32]) {
        for (o, block) in out
            .chunks_mut(Q8_BLOCK)
            .zip(row.chunks_exact(Q8_BLOCK_BYTES))
        {
            let scale = q8_scale(block);
            for (o, &q) in o.iter_mut().zip(block) {
                *o = f32::from(q) * scale;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const i8, c: usize) -> __m256 {
        use std::arch::x86_64::*;
        let block = (8 * c / Q8_BLOCK) * Q8_BLOCK_BYTES;
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8: their eight bytes
        // and their block's scale (the block's last four bytes).
        unsafe {
            let q = _mm_loadl_epi64(p.add(block + 8 * c % Q8_BLOCK).cast());
            let scale = p.add(block + Q8_BLOCK).cast::<f32>().read_unaligned();
            _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                _mm256_set1_ps(scale),
            )
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const i8, c: usize) -> __m512 {
        use std::arch::x86_64::*;
        let block = (16 * c / Q8_BLOCK) * Q8_BLOCK_BYTES;
        // SAFETY: as for `load8`, sixteen bytes and the block's scale.
        unsafe {
            let q = _mm_loadu_si128(p.add(block + 16 * c % Q8_BLOCK).cast());
            let scale = p.add(block + Q8_BLOCK).cast::<f32>().read_unaligned();
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)),
                _mm512_set1_ps(scale),
            )
        }
    }
}

/// Asks for the cache lines of `row[at..at + len]` (nothing when past the run's end; a
/// prefetch never faults, but the address is kept inside the slice anyway). A head's rows
/// are a fraction of each cached position (the other heads' rows lie between), a stride
/// the hardware prefetchers follow too late, and the SIMD kernels stall on the loads
/// without asking ahead.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_row<T>(row: &[T], at: usize, len: usize) {
    if at + len <= row.len() {
        let p = row[at..].as_ptr().cast::<i8>();
        let bytes = len * std::mem::size_of::<T>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: `p + off` lies inside `row` (checked above); prefetching reads nothing.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
        // SAFETY: as above, the row's last byte.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(bytes - 1)) };
    }
}

/// The scale of one stored [`Q8_BLOCK_BYTES`]-byte block (its last four bytes).
fn q8_scale(block: &[i8]) -> f32 {
    let b = |i: usize| block[Q8_BLOCK + i] as u8;
    f32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// One attention head's view of a sequence's cache: the cached runs and where the head's
/// keys and values sit in each position's row.
pub struct HeadKv<'a, T> {
    /// `(keys, values, positions)` runs, oldest first.
    pub runs: &'a [super::kv::Run<'a, T>],
    /// Offset of this head in a position's row, in stored elements.
    pub offset: usize,
    /// Stored elements per position (of kv heads × head size values).
    pub stride: usize,
}

impl<T> HeadKv<'_, T> {
    /// Positions the runs hold.
    pub fn cached(&self) -> usize {
        self.runs.iter().map(|r| r.2).sum()
    }
}

/// Most query heads one attention block holds on the AVX-512 kernel (which keeps a block's
/// per-head accumulators in registers) and in the per-head loop; the AVX2 kernel takes
/// more (see [`block_heads`]).
pub const MAX_BLOCK_HEADS: usize = 8;

/// Query heads that share one key/value head: `rows` consecutive positions of one sequence,
/// `group` query heads each, so cached keys and values are read once for all of them.
pub struct QueryBlock<'q> {
    /// Queries, `head_dim` values per head, heads of the first position first.
    pub q: &'q [f32],
    /// Query heads per key/value head.
    pub group: usize,
    /// Positions the first row attends to (its own included); row `r` attends to
    /// `first_len + r`.
    pub first_len: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Score scale, `1 / sqrt(head_dim)`.
    pub scale: f32,
}

impl QueryBlock<'_> {
    /// Query heads in the block.
    pub fn heads(&self) -> usize {
        self.q.len() / self.head_dim
    }

    /// Positions head `h` attends to.
    pub fn len_of(&self, h: usize) -> usize {
        self.first_len + h / self.group
    }

    /// Every one of the `H` heads' lengths and the longest, checked against the `cached`
    /// positions.
    pub fn lengths<const H: usize>(&self, cached: usize) -> ([usize; H], usize) {
        (
            std::array::from_fn(|h| self.len_of(h)),
            self.longest(cached),
        )
    }

    /// The last head's length, the longest (lengths never decrease), checked against the
    /// `cached` positions.
    pub fn longest(&self, cached: usize) -> usize {
        let longest = self.len_of(self.heads().saturating_sub(1));
        assert!(cached >= longest, "attention past the cached positions");
        longest
    }
}
