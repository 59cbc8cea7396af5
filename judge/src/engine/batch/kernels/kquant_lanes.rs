//! Q4_K products with weight rows in the vector lanes (the default where the SIMD kernels
//! run; `AUTOJ_KQUANT_LANES=0` keeps the standard layout).
//!
//! The standard kernels ([`super::kquant_avx512`], [`super::kquant_avx2`]) spread one weight
//! row's 256 values over registers and pay, per block, row and activation row, the integer
//! and float work that applies the eight sub-block scales and mins. Here a register holds
//! four consecutive bytes of several weight rows (sixteen in 512 bits, eight in 256) and the
//! activation's four bytes are broadcast, so the multiply-adds are as wide as before but each
//! sub-block's scale and min is one vector operation for all the register's rows. A timing
//! of the product alone measured about twice the standard kernel's speed on AVX-512. The
//! price is a repacked copy of each Q4_K matrix, made at load (1.03x its bytes: the group's
//! scales sit side by side, one byte each), and a load that reads every such matrix; the
//! model file's pages for them are released after packing, so resident memory stays about
//! the file's size.
//!
//! The kernels are [`super::kquant_lanes_avx512`] (`dpbusd`) and [`super::kquant_lanes_avx2`]
//! (`maddubs`). A row's arithmetic is the same whatever the number of activation rows in a
//! pass (each activation row has its own accumulators), so outputs stay batch-invariant;
//! the matrix uses this layout for every product or for none.

// `unsafe`: viewing the packed bytes as registers, the kernels' entry (each checked for its
// CPU features) and the release of mapped pages, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::{__m256i, __m512i};
use std::ops::Range;

use super::kquant::{quantize_q8k, scales_mins, BlockQ4K, BlockQ8K, Stored, QK_K};
use super::{tiled, Epilogue, KQUANT_TILE};

/// Registers per (group, block): 32 of packed values, then the group's 6-bit scales
/// (8 sub-blocks × rows bytes: two registers), their mins (two), and `d`, `dmin` as half
/// floats (one). With sixteen rows in 512 bits: 2,368 bytes against the 2,304 of sixteen
/// Q4_K blocks; with eight in 256 bits, 1,184 against 1,152.
pub(super) const PER_BLOCK: usize = 37;

/// Which kernel runs the repacked matrices: rows per group follow the register width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// Sixteen rows in 512-bit registers (AVX-512 VNNI).
    Avx512,
    /// Eight rows in 256-bit registers (AVX2).
    Avx2,
}

impl Width {
    /// Weight rows per group: one 32-bit lane each.
    fn rows(self) -> usize {
        match self {
            Self::Avx512 => 16,
            Self::Avx2 => 8,
        }
    }
}

/// The layout this process packs for: the kernel path's register width, or none where the
/// portable kernels run or `AUTOJ_KQUANT_LANES=0` asks for the standard layout.
fn width() -> Option<Width> {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Option<Width>> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let wanted = std::env::var("AUTOJ_KQUANT_LANES").map_or(true, |v| v != "0");
        match (wanted && super::uses_simd(), super::uses_avx512()) {
            (false, _) => None,
            (true, true) => Some(Width::Avx512),
            (true, false) => Some(Width::Avx2),
        }
    })
}

/// Whether Q4_K matrices are repacked (see [`width`]).
pub fn enabled() -> bool {
    width().is_some()
}

/// A Q4_K matrix repacked a group of rows at a time.
pub struct Q4KLanes {
    /// The packed registers, in 64-byte units (aligned for either width).
    data: Vec<__m512i>,
    width: Width,
    n: usize,
    k: usize,
}

impl Q4KLanes {
    /// Repacks `n` rows of `k` values (`n` a multiple of the group's rows) for this CPU's
    /// kernel, then releases the mapped pages it read (they would otherwise stay in this
    /// process's resident memory). `None` where the layout is off or the shape does not fit.
    pub fn new(w: &Stored, n: usize, k: usize) -> Option<Self> {
        Self::packed(w, n, k, width()?)
    }

    /// [`Self::new`] for the kernel of `width` (the caller checked that the CPU runs it).
    fn packed(w: &Stored, n: usize, k: usize, width: Width) -> Option<Self> {
        let rows = width.rows();
        if !n.is_multiple_of(rows) || !k.is_multiple_of(QK_K) {
            return None;
        }
        let kb = k / QK_K;
        let blocks: &[BlockQ4K] = bytemuck::try_cast_slice(w).ok()?;
        if blocks.len() != n * kb {
            return None;
        }
        let block_bytes = PER_BLOCK * 4 * rows;
        let total = n / rows * kb * block_bytes;
        // SAFETY: an all-zero register is a plain value (no instruction runs).
        let zero = unsafe { std::mem::transmute::<[u8; 64], __m512i>([0; 64]) };
        let mut data = vec![zero; total.div_ceil(64)];
        // SAFETY: the registers are plain bytes; the view covers `total` of their bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), total) };
        // Groups split over the machine's cores (a 7B file's Q4_K matrices are 3.6 GB).
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per_thread = (n / rows).div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (t, part) in bytes.chunks_mut(per_thread * kb * block_bytes).enumerate() {
                scope.spawn(move || {
                    for (i, out) in part.chunks_exact_mut(block_bytes).enumerate() {
                        let (g, b) = (t * per_thread + i / kb, i % kb);
                        pack_block(|r| &blocks[(rows * g + r) * kb + b], rows, out);
                    }
                });
            }
        });
        if let Stored::Mapped { map, range } = w {
            // SAFETY: the map is a private read-only file mapping; dropping its pages only
            // means a later read faults them in again from the file, which is unchanged.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        Some(Self { data, width, n, k })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Bytes of the repacked matrix.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64
    }

    /// `x` is `[m, k]` row-major; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let kb = self.k / QK_K;
        let xq = quantize_q8k(x, m, self.k);
        let width = self.width.rows();
        let fill = |g: usize, rows: Range<usize>, out: &mut [f32]| {
            let act = |r: usize| &xq[r * kb..(r + 1) * kb];
            let mut i = 0;
            while rows.start + i + 8 <= rows.end {
                let r = rows.start + i;
                let x = std::array::from_fn(|j| act(r + j));
                self.group::<8>(g, x, &mut out[i * width..(i + 8) * width]);
                i += 8;
            }
            while rows.start + i < rows.end {
                let x = [act(rows.start + i)];
                self.group::<1>(g, x, &mut out[i * width..(i + 1) * width]);
                i += 1;
            }
        };
        tiled(self.n, m, (width, KQUANT_TILE), Epilogue::Plain, fill)
    }

    /// Group `g`'s rows against `N` activation rows, written to `out` one activation row
    /// after another (`N × rows` values).
    fn group<const N: usize>(&self, g: usize, x: [&[BlockQ8K]; N], out: &mut [f32]) {
        let regs = PER_BLOCK * (self.k / QK_K);
        match self.width {
            Width::Avx512 => {
                let group = &self.data[g * regs..(g + 1) * regs];
                // SAFETY: `width` chose AVX-512 only where the CPU has it (and VNNI).
                unsafe { super::kquant_lanes_avx512::group(group, x, out) }
            }
            Width::Avx2 => {
                // SAFETY: the 64-byte units are 32-byte aligned pairs of 256-bit registers;
                // the view stays inside the vector (`regs` per group, `n / 8` groups).
                let all = unsafe {
                    std::slice::from_raw_parts(
                        self.data.as_ptr().cast::<__m256i>(),
                        self.n / 8 * regs,
                    )
                };
                let group = &all[g * regs..(g + 1) * regs];
                // SAFETY: `width` chose AVX2 only where the SIMD kernels run (AVX2, FMA and
                // F16C checked).
                unsafe { super::kquant_lanes_avx2::group(group, x, out) }
            }
        }
    }
}

/// Four activation bytes from `at` as one 32-bit value (one load the multiply-add can take as
/// its broadcast operand).
#[inline(always)]
pub(super) fn word(qs: &[i8; QK_K], at: usize) -> i32 {
    assert!(at + 4 <= QK_K);
    // SAFETY: `at..at + 4` lies inside `qs` (checked); the read is unaligned.
    unsafe { qs.as_ptr().add(at).cast::<i32>().read_unaligned() }
}

/// Writes one (group, block) of `rows` weight rows to `out` (37 registers of `4 · rows`
/// bytes): dword `i` of every row's values in register `i`, then the rows' scales and mins
/// (sub-block-major: byte `rows · s + r` is sub-block `s` of row `r`), then `d` of each row
/// (two bytes per row) and `dmin` of each row.
fn pack_block<'a>(row: impl Fn(usize) -> &'a BlockQ4K, rows: usize, out: &mut [u8]) {
    let reg = 4 * rows;
    let (values, rest) = out.split_at_mut(32 * reg);
    let (scales, rest) = rest.split_at_mut(8 * rows);
    let (mins, halves) = rest.split_at_mut(8 * rows);
    for r in 0..rows {
        let block = row(r);
        for (i, word) in block.qs.chunks_exact(4).enumerate() {
            values[reg * i + 4 * r..reg * i + 4 * r + 4].copy_from_slice(word);
        }
        let (sc, m) = scales_mins(&block.scales);
        for s in 0..8 {
            scales[rows * s + r] = sc[s];
            mins[rows * s + r] = m[s];
        }
        halves[2 * r..2 * r + 2].copy_from_slice(&block.d);
        halves[2 * rows + 2 * r..2 * rows + 2 * r + 2].copy_from_slice(&block.dmin);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::engine::batch::kernels::KQuant;
    use crate::engine::batch::test_values::random;

    /// Each width the CPU runs (AVX-512 and AVX2 on an AVX-512 machine) against the
    /// standard kernel on candle-quantized weights, and each activation row's bits the same
    /// alone as among thirteen (passes of eight, then ones).
    #[test]
    fn lanes_match_the_standard_kernel_and_rows_are_batch_invariant() {
        let mut widths = Vec::new();
        if super::super::tiles16::available() {
            widths.push(Width::Avx512);
        }
        if super::super::uses_simd() {
            widths.push(Width::Avx2);
        }
        if widths.is_empty() {
            eprintln!("skipped: this CPU runs neither the AVX-512 nor the AVX2 kernels");
            return;
        }
        let (n, k, m) = (48, 768, 13);
        let w = Tensor::from_vec(random(n * k, 5), (n, k), &Device::Cpu).unwrap();
        let bytes = QTensor::quantize(&w, GgmlDType::Q4K)
            .unwrap()
            .data()
            .unwrap()
            .into_owned();
        let stored = Stored::Owned(bytes.into());
        let standard = KQuant::new(GgmlDType::Q4K, stored.clone(), n, k).unwrap();
        let x = random(m * k, 9);
        let want = standard.matmul(&x, m);
        for width in widths {
            let lanes = Q4KLanes::packed(&stored, n, k, width).expect("whole groups");
            let got = lanes.matmul(&x, m);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{width:?} [{i}] {a} vs {b}"
                );
            }
            for r in [0, 7, 8, 12] {
                let alone = lanes.matmul(&x[r * k..(r + 1) * k], 1);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let among = &got[r * n..(r + 1) * n];
                assert_eq!(bits(&alone), bits(among), "{width:?} row {r}");
            }
            let three_rows = Stored::Owned(vec![0u8; 144 * 3].into());
            assert!(Q4KLanes::packed(&three_rows, 3, 256, width).is_none());
        }
    }
}
