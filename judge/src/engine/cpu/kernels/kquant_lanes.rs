//! K-quant products with weight rows in the vector lanes: Q4_K, Q5_K and Q6_K (the types of
//! llama.cpp's Q4_K_M, Q5_K_M and Q6_K files), the default where the SIMD kernels run; `AUTOJ_KQUANT_LANES=0` keeps the
//! standard layout.
//!
//! The standard kernels ([`super::kquant_avx512`], [`super::kquant_avx2`]) spread one weight
//! row's 256 values over registers and pay, per block, row and activation row, the integer
//! and float work that applies the sub-block scales (and Q4_K's mins, Q6_K's offset of 32).
//! Here a register holds four consecutive bytes of several weight rows (sixteen in 512 bits,
//! eight in 256) and the activation's four bytes are broadcast, so the multiply-adds are as
//! wide as before but each sub-block's scale is one vector operation for all the register's
//! rows. A timing of the Q4_K product alone measured about twice the standard kernel's speed
//! on both paths. The price is a repacked copy of each matrix, made at load (1.03x the bytes
//! of Q4_K, 1.02x of Q5_K, 1.01x of Q6_K: the group's scales sit side by side), and a load that reads every
//! such matrix; the model file's pages for them are released after packing, so resident
//! memory stays about the file's size.
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

use bytemuck::Pod;
use candle_core::quantized::GgmlDType;

use super::kquant::{scales_mins, BlockQ4K, BlockQ5K, BlockQ6K, Stored, QK_K};
use super::q8k::BlockQ8K;
use super::tiling::{tiled, Epilogue, KQUANT_TILE};

/// Q4_K registers per (group, block): 32 of packed values, then the group's 6-bit scales
/// (8 sub-blocks × rows bytes: two registers), their mins (two), and `d`, `dmin` as half
/// floats (one). With sixteen rows in 512 bits: 2,368 bytes against the 2,304 of sixteen
/// Q4_K blocks; with eight in 256 bits, 1,184 against 1,152.
pub(super) const Q4K_REGS: usize = 37;
/// Q5_K registers per (group, block): Q4_K's, with the fifth bits' eight registers (`qh`
/// word `i` of every row in register `32 + i`) before the scales: 2,880 bytes against 2,816
/// for sixteen rows.
pub(super) const Q5K_REGS: usize = 45;
/// Q6_K registers per (group, block): 32 of low four bits, 16 of high two bits, the
/// sixteen signed scales of each row (four registers: pairs of consecutive scales side by
/// side, row after row) and `d` (half a register): 3,392 bytes against 3,360 for sixteen rows.
pub(super) const Q6K_REGS: usize = 53;

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

/// The weight types this layout takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Q4K,
    Q5K,
    Q6K,
}

impl Kind {
    /// Registers per (group, block).
    fn regs(self) -> usize {
        match self {
            Self::Q4K => Q4K_REGS,
            Self::Q5K => Q5K_REGS,
            Self::Q6K => Q6K_REGS,
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
        match (
            wanted && super::blocks::uses_simd(),
            super::dispatch::uses_avx512(),
        ) {
            (false, _) => None,
            (true, true) => Some(Width::Avx512),
            (true, false) => Some(Width::Avx2),
        }
    })
}

/// A Q4_K, Q5_K or Q6_K matrix repacked a group of rows at a time.
pub struct Lanes {
    /// The packed registers: an anonymous mapping (page-aligned, so aligned for either
    /// width) that asks for huge pages, since a decode step streams every matrix once and
    /// 4 KiB pages cost a TLB miss, and a stop of the hardware prefetcher, every 4 KiB.
    data: memmap2::MmapMut,
    width: Width,
    kind: Kind,
    n: usize,
    k: usize,
}

impl Lanes {
    /// Repacks `n` rows of `k` values of GGUF type `dtype` (Q4_K, Q5_K or Q6_K) for this CPU's
    /// kernel, then releases the mapped pages it read (they would otherwise stay in this
    /// process's resident memory). A last group with fewer than the width's rows repeats its
    /// last row (those outputs are never written out). `None` where the layout is off or the
    /// type or shape does not fit.
    pub fn new(dtype: GgmlDType, w: &Stored, n: usize, k: usize) -> Option<Self> {
        let kind = match dtype {
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q5K => Kind::Q5K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return None,
        };
        Self::packed(kind, w, n, k, width()?)
    }

    /// [`Self::new`] for the kernel of `width` (the caller checked that the CPU runs it).
    fn packed(kind: Kind, w: &Stored, n: usize, k: usize, width: Width) -> Option<Self> {
        let rows = width.rows();
        if n == 0 || !k.is_multiple_of(QK_K) {
            return None;
        }
        let block_bytes = kind.regs() * 4 * rows;
        let mut data =
            memmap2::MmapMut::map_anon(n.div_ceil(rows) * (k / QK_K) * block_bytes).ok()?;
        // Advice only: without transparent huge pages the matrix is read from small pages.
        #[cfg(target_os = "linux")]
        let _ = data.advise(memmap2::Advice::HugePage);
        let shape = Packing {
            rows,
            n,
            kb: k / QK_K,
            block_bytes,
        };
        match kind {
            Kind::Q4K => shape.run(bytemuck::try_cast_slice(w).ok()?, &mut data, pack_q4k)?,
            Kind::Q5K => shape.run(bytemuck::try_cast_slice(w).ok()?, &mut data, pack_q5k)?,
            Kind::Q6K => shape.run(bytemuck::try_cast_slice(w).ok()?, &mut data, pack_q6k)?,
        }
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
        Some(Self {
            data,
            width,
            kind,
            n,
            k,
        })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Bytes of the repacked matrix.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The weight type and layout, for the kernel census.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Q4K => "q4_k_lanes",
            Kind::Q5K => "q5_k_lanes",
            Kind::Q6K => "q6_k_lanes",
        }
    }

    /// Input size.
    pub fn columns(&self) -> usize {
        self.k
    }

    /// `xq` is `[m, k]` quantized by [`super::quantize_q8k`]; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul_q8k(&self, xq: &[BlockQ8K], m: usize) -> Vec<f32> {
        let kb = self.k / QK_K;
        assert_eq!(xq.len(), m * kb, "activations of another width");
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
        use super::{kquant_lanes_avx2 as avx2, kquant_lanes_avx512 as avx512};
        let regs = self.kind.regs() * (self.k / QK_K);
        match self.width {
            Width::Avx512 => {
                let group = &self.registers::<__m512i>()[g * regs..(g + 1) * regs];
                // SAFETY: `width` chose AVX-512 only where the CPU has it (and VNNI).
                match self.kind {
                    Kind::Q4K => unsafe { avx512::q4k(group, x, out) },
                    Kind::Q5K => unsafe { avx512::q5k(group, x, out) },
                    Kind::Q6K => unsafe { avx512::q6k(group, x, out) },
                }
            }
            Width::Avx2 => {
                let group = &self.registers::<__m256i>()[g * regs..(g + 1) * regs];
                // SAFETY: `width` chose AVX2 only where the SIMD kernels run (AVX2, FMA and
                // F16C checked).
                match self.kind {
                    Kind::Q4K => unsafe { avx2::q4k(group, x, out) },
                    Kind::Q5K => unsafe { avx2::q5k(group, x, out) },
                    Kind::Q6K => unsafe { avx2::q6k(group, x, out) },
                }
            }
        }
    }

    /// The packed bytes as registers of the width's type `R`.
    fn registers<R>(&self) -> &[R] {
        let size = std::mem::size_of::<R>();
        assert_eq!(size, 4 * self.width.rows());
        // SAFETY: the mapping is page-aligned (so aligned for a 64-byte register) and holds
        // a whole number of registers (`regs()` per group and block); `R` is a register type
        // for which any bytes are a value.
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().cast::<R>(), self.data.len() / size)
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

/// Software prefetch of the (group, block) unit two after the current one, spread over the
/// current unit's inner steps, for passes of one activation row (decode). Every kernel but
/// the AVX-512 Q4_K one uses it: they run long per unit with one row (Q6_K also visits its
/// registers out of order, Q5_K reads values and fifth bits as two streams), and streaming
/// from memory without it reached a third of the standard kernel's bandwidth on Q6_K (AVX2
/// Q4_K: 51-68 against 66-81 GMAC/s with it); the AVX-512 Q4_K kernel reads its unit in
/// order and measured no better with it. With eight rows per
/// pass the work per unit hides the latency and the prefetches cost more than they save.
/// (An SSE instruction: both widths use it.)
pub(super) struct Ahead {
    at: *const i8,
    stride: usize,
}

impl Ahead {
    /// Prefetching for the unit two after `unit`, in `steps` steps.
    #[inline(always)]
    pub(super) fn new<R>(unit: &[R], steps: usize) -> Self {
        let bytes = std::mem::size_of_val(unit);
        Self {
            at: unit.as_ptr().cast::<i8>().wrapping_add(2 * bytes),
            stride: bytes.div_ceil(steps),
        }
    }

    /// Step `i`: the byte `i · stride` of that unit's line.
    #[inline(always)]
    pub(super) fn step(&self, i: usize) {
        // SAFETY: a prefetch never faults, whatever the address; `wrapping_add` keeps the
        // pointer arithmetic defined past the end of the matrix.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                self.at.wrapping_add(i * self.stride),
            )
        };
    }
}

/// How a matrix's blocks map onto packed (group, block) units.
struct Packing {
    /// Rows per group.
    rows: usize,
    /// Rows of the matrix.
    n: usize,
    /// Blocks per row.
    kb: usize,
    /// Bytes per (group, block).
    block_bytes: usize,
}

impl Packing {
    /// Packs every (group, block) of `blocks` (`n · kb` of them, row-major) into `out` with
    /// `pack(rows of the group's block, unit)`, groups split over the machine's cores
    /// (a 7B file's K-quant matrices are 4 GB). `None` when the block count does not match.
    fn run<B: Pod + Sync>(
        &self,
        blocks: &[B],
        out: &mut [u8],
        pack: fn(&[&B], &mut [u8]),
    ) -> Option<()> {
        let Self {
            rows,
            n,
            kb,
            block_bytes,
        } = *self;
        let groups = n.div_ceil(rows);
        if blocks.len() != n * kb || out.len() != groups * kb * block_bytes {
            return None;
        }
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per_thread = groups.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (t, part) in out.chunks_mut(per_thread * kb * block_bytes).enumerate() {
                scope.spawn(move || {
                    for (i, unit) in part.chunks_exact_mut(block_bytes).enumerate() {
                        let (g, b) = (t * per_thread + i / kb, i % kb);
                        // At most sixteen rows (the widest group); the rest unused. Rows past
                        // the matrix (a last, partial group) repeat its last row.
                        let group: [&B; 16] =
                            std::array::from_fn(|r| &blocks[(rows * g + r).min(n - 1) * kb + b]);
                        pack(&group[..rows], unit);
                    }
                });
            }
        });
        Some(())
    }
}

/// Copies word `i` (bytes `4i..4i + 4`) of row `r`'s `bytes` into register `i`'s lane `r`.
fn spread_words(bytes: &[u8], r: usize, rows: usize, out: &mut [u8]) {
    for (i, word) in bytes.chunks_exact(4).enumerate() {
        out[4 * (rows * i + r)..4 * (rows * i + r) + 4].copy_from_slice(word);
    }
}

/// One Q4_K (group, block) of `rows` weight rows ([`Q4K_REGS`] registers of `4 · rows`
/// bytes): dword `i` of every row's values in register `i`, then the rows' scales and mins
/// (sub-block-major: byte `rows · s + r` is sub-block `s` of row `r`), then `d` of each row
/// (two bytes per row) and `dmin` of each row.
fn pack_q4k(group: &[&BlockQ4K], out: &mut [u8]) {
    let rows = group.len();
    let (values, head) = out.split_at_mut(32 * 4 * rows);
    for (r, block) in group.iter().enumerate() {
        spread_words(&block.qs, r, rows, values);
        pack_head(r, rows, (&block.scales, block.d, block.dmin), head);
    }
}

/// One Q5_K (group, block) of `rows` weight rows ([`Q5K_REGS`] registers): Q4_K's layout
/// with dword `i` of every row's fifth bits (`qh`) in register `32 + i` before the scales.
fn pack_q5k(group: &[&BlockQ5K], out: &mut [u8]) {
    let rows = group.len();
    let (values, rest) = out.split_at_mut(32 * 4 * rows);
    let (fifth, head) = rest.split_at_mut(8 * 4 * rows);
    for (r, block) in group.iter().enumerate() {
        spread_words(&block.qs, r, rows, values);
        spread_words(&block.qh, r, rows, fifth);
        pack_head(r, rows, (&block.scales, block.d, block.dmin), head);
    }
}

/// Row `r`'s scales, mins, `d` and `dmin` (a Q4_K / Q5_K header) into the group's head:
/// scales and mins sub-block-major (byte `rows · s + r`), then the `d` and `dmin` halves.
fn pack_head(
    r: usize,
    rows: usize,
    (packed, d, dmin): (&[u8; 12], [u8; 2], [u8; 2]),
    head: &mut [u8],
) {
    let (scales, rest) = head.split_at_mut(8 * rows);
    let (mins, halves) = rest.split_at_mut(8 * rows);
    let (sc, m) = scales_mins(packed);
    for s in 0..8 {
        scales[rows * s + r] = sc[s];
        mins[rows * s + r] = m[s];
    }
    halves[2 * r..2 * r + 2].copy_from_slice(&d);
    halves[2 * rows + 2 * r..2 * rows + 2 * r + 2].copy_from_slice(&dmin);
}

/// One Q6_K (group, block) of `rows` weight rows ([`Q6K_REGS`] registers of `4 · rows`
/// bytes): dword `i` of every row's `ql` in register `i` and of its `qh` in register
/// `32 + i`, then the scales in pairs (byte `2 · rows · p + 2r + e` is scale `2p + e` of row
/// `r`, so one widening gives each row's lane the pair), then `d` of each row.
fn pack_q6k(group: &[&BlockQ6K], out: &mut [u8]) {
    let rows = group.len();
    let (ql, rest) = out.split_at_mut(32 * 4 * rows);
    let (qh, rest) = rest.split_at_mut(16 * 4 * rows);
    let (scales, halves) = rest.split_at_mut(16 * rows);
    for (r, block) in group.iter().enumerate() {
        spread_words(&block.ql, r, rows, ql);
        spread_words(&block.qh, r, rows, qh);
        for (s, &sc) in block.scales.iter().enumerate() {
            scales[2 * rows * (s / 2) + 2 * r + s % 2] = sc as u8;
        }
        halves[2 * r..2 * r + 2].copy_from_slice(&block.d);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::engine::cpu::kernels::test_values::random;
    use crate::engine::cpu::kernels::{quantize_q8k, KQuant};

    /// Each type and each width the CPU runs (AVX-512 and AVX2 on an AVX-512 machine)
    /// against the standard kernel on candle-quantized weights, and each activation row's
    /// bits the same alone as among thirteen (passes of eight, then ones).
    #[test]
    fn lanes_match_the_standard_kernel_and_rows_are_batch_invariant() {
        let mut widths = Vec::new();
        if super::super::tiles16::available() {
            widths.push(Width::Avx512);
        }
        if super::super::blocks::uses_simd() {
            widths.push(Width::Avx2);
        }
        if widths.is_empty() {
            eprintln!("skipped: this CPU runs neither the AVX-512 nor the AVX2 kernels");
            return;
        }
        // 43 rows: two whole groups of sixteen (five of eight) and a partial one.
        let (n, k, m) = (43, 768, 13);
        let w = Tensor::from_vec(random(n * k, 5), (n, k), &Device::Cpu).unwrap();
        let x = random(m * k, 9);
        let types = [
            (GgmlDType::Q4K, Kind::Q4K),
            (GgmlDType::Q5K, Kind::Q5K),
            (GgmlDType::Q6K, Kind::Q6K),
        ];
        for (dtype, kind) in types {
            let bytes = QTensor::quantize(&w, dtype)
                .unwrap()
                .data()
                .unwrap()
                .into_owned();
            let stored = Stored::Owned(bytes.into());
            let want = KQuant::new(dtype, stored.clone(), n, k)
                .unwrap()
                .matmul(&x, m);
            for &width in &widths {
                let lanes = Lanes::packed(kind, &stored, n, k, width).expect("whole groups");
                let got = lanes.matmul_q8k(&quantize_q8k(&x, m, k), m);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{kind:?} {width:?} [{i}] {a} vs {b}"
                    );
                }
                for r in [0, 7, 8, 12] {
                    let alone = lanes.matmul_q8k(&quantize_q8k(&x[r * k..(r + 1) * k], 1, k), 1);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let among = &got[r * n..(r + 1) * n];
                    assert_eq!(bits(&alone), bits(among), "{kind:?} {width:?} row {r}");
                }
                let short = Stored::Owned(vec![0u8; 210 * 3].into());
                assert!(Lanes::packed(kind, &short, 4, 256, width).is_none());
            }
        }
    }
}
