//! Q4_K products with weight rows in the vector lanes (AVX-512 VNNI; the default there,
//! `AUTOJ_KQUANT_LANES=0` keeps the standard layout).
//!
//! The standard kernel ([`super::kquant_avx512`]) spreads one weight row's 256 values over a
//! register and pays, per block, row and activation row, two `madd`s and three float
//! operations to apply the sub-block scales and mins. Here a register holds four consecutive
//! bytes of sixteen different weight rows and the activation's four bytes are broadcast, so
//! one `dpbusd` still does 64 multiply-adds, but each sub-block's scale, min and float work
//! is one vector operation for sixteen rows. A timing of the product alone measured about
//! twice the standard kernel's speed. The price is a repacked copy of each Q4_K matrix,
//! made at load (1.03x its bytes: the sixteen rows' scales sit side by side and become floats
//! once per block), and a load that reads every such matrix; the model file's pages for them
//! are released after packing, so resident memory stays about the file's size.
//!
//! A row's arithmetic is the same whatever the number of activation rows in a pass (each
//! activation row has its own accumulators), so outputs stay batch-invariant; the matrix uses
//! this layout for every product or for none.

// `unsafe`: AVX-512 intrinsics and the release of mapped pages, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::kquant::{quantize_q8k, scales_mins, BlockQ4K, BlockQ8K, Stored, QK_K};
use super::{tiled, Epilogue, KQUANT_TILE};

/// Weight rows per group: the lanes of one 512-bit register of 32-bit sums.
const ROWS: usize = 16;
/// Registers per (group, block): 32 of packed values, then the sixteen rows' 6-bit scales
/// (8 × 16 bytes: two registers), their mins (two), and `d`, `dmin` as half floats (one):
/// 2,368 bytes against the 2,304 of sixteen Q4_K blocks.
const PER_BLOCK: usize = 37;

/// Whether Q4_K matrices are repacked: where the AVX-512 kernels run, unless
/// `AUTOJ_KQUANT_LANES=0` asks for the standard layout.
pub fn enabled() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("AUTOJ_KQUANT_LANES").map_or(true, |v| v != "0")
            && super::uses_avx512()
            && super::uses_simd()
    })
}

/// A Q4_K matrix repacked sixteen rows to a group.
pub struct Q4KLanes {
    data: Vec<__m512i>,
    n: usize,
    k: usize,
}

impl Q4KLanes {
    /// Repacks `n` rows of `k` values (`n` a multiple of 16), then releases the mapped
    /// pages it read (they would otherwise stay in this process's resident memory).
    pub fn new(w: &Stored, n: usize, k: usize) -> Option<Self> {
        if !n.is_multiple_of(ROWS) || !k.is_multiple_of(QK_K) {
            return None;
        }
        let kb = k / QK_K;
        let blocks: &[BlockQ4K] = bytemuck::try_cast_slice(w).ok()?;
        if blocks.len() != n * kb {
            return None;
        }
        let groups = n / ROWS;
        // SAFETY: an all-zero register is a plain value (no instruction runs).
        let zero = unsafe { std::mem::transmute::<[u8; 64], __m512i>([0; 64]) };
        let mut data = vec![zero; groups * kb * PER_BLOCK];
        // Groups split over the machine's cores (a 7B file's Q4_K matrices are 3.6 GB).
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per_thread = groups.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (t, part) in data.chunks_mut(per_thread * kb * PER_BLOCK).enumerate() {
                scope.spawn(move || {
                    for (i, regs) in part.chunks_exact_mut(PER_BLOCK).enumerate() {
                        let (g, b) = (t * per_thread + i / kb, i % kb);
                        pack_block(|r| &blocks[(ROWS * g + r) * kb + b], regs);
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
        Some(Self { data, n, k })
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
        let fill = |g: usize, rows: Range<usize>, out: &mut [f32]| {
            let act = |r: usize| &xq[r * kb..(r + 1) * kb];
            let mut i = 0;
            while rows.start + i + 8 <= rows.end {
                let r = rows.start + i;
                // SAFETY: `enabled` (checked before any matrix was packed) found AVX-512.
                let y = unsafe { self.group::<8>(g, std::array::from_fn(|j| act(r + j))) };
                write(&y, &mut out[i * ROWS..]);
                i += 8;
            }
            while rows.start + i < rows.end {
                // SAFETY: as above.
                let y = unsafe { self.group::<1>(g, [act(rows.start + i)]) };
                write(&y, &mut out[i * ROWS..]);
                i += 1;
            }
        };
        tiled(self.n, m, (ROWS, KQUANT_TILE), Epilogue::Plain, fill)
    }

    /// Group `g`'s sixteen weight rows against `N` activation rows; `[row][lane]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn group<const N: usize>(&self, g: usize, x: [&[BlockQ8K]; N]) -> [[f32; ROWS]; N] {
        let kb = self.k / QK_K;
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); N];
        let group = &self.data[g * kb * PER_BLOCK..(g + 1) * kb * PER_BLOCK];
        for (b, regs) in group.chunks_exact(PER_BLOCK).enumerate() {
            // Each sub-block's `d·scale` and `dmin·min` for the sixteen rows, as floats.
            let (scales, mins) = factors(&regs[32..]);
            let mut block = [_mm512_setzero_ps(); N];
            for c in 0..4 {
                let (mut lo, mut hi) = ([_mm512_setzero_si512(); N], [_mm512_setzero_si512(); N]);
                for q in 0..8 {
                    let t = regs[8 * c + q];
                    let (wl, wh) = (
                        _mm512_and_si512(t, low),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(t), low),
                    );
                    for j in 0..N {
                        let qs = &x[j][b].qs;
                        let (a, b2) = (word(qs, 64 * c + 4 * q), word(qs, 64 * c + 32 + 4 * q));
                        lo[j] = _mm512_dpbusd_epi32(lo[j], wl, _mm512_set1_epi32(a));
                        hi[j] = _mm512_dpbusd_epi32(hi[j], wh, _mm512_set1_epi32(b2));
                    }
                }
                let (sl, sh) = (scales[2 * c], scales[2 * c + 1]);
                for j in 0..N {
                    block[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[j]), sl, block[j]);
                    block[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[j]), sh, block[j]);
                }
            }
            for j in 0..N {
                let xb = &x[j][b];
                acc[j] = _mm512_fmadd_ps(block[j], _mm512_set1_ps(xb.d), acc[j]);
                for (m, pair) in mins.iter().zip(xb.dsums.chunks_exact(2)) {
                    let sum = pair[0] + pair[1];
                    acc[j] = _mm512_fnmadd_ps(*m, _mm512_set1_ps(sum), acc[j]);
                }
            }
        }
        acc.map(|a| {
            let mut out = [0f32; ROWS];
            // SAFETY: `out` holds sixteen floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), a) };
            out
        })
    }
}

/// The eight sub-blocks' `d·scale` and `dmin·min` of sixteen rows from their packed form
/// (`regs`: scales, mins, then `d` and `dmin`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn factors(regs: &[__m512i]) -> ([__m512; 8], [__m512; 8]) {
    let halves = regs[4];
    let d = _mm512_cvtph_ps(_mm512_castsi512_si256(halves));
    let dmin = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(halves));
    let spread = |pair: &[__m512i], s: usize, factor: __m512| {
        let bytes = match s % 4 {
            0 => _mm512_extracti32x4_epi32::<0>(pair[s / 4]),
            1 => _mm512_extracti32x4_epi32::<1>(pair[s / 4]),
            2 => _mm512_extracti32x4_epi32::<2>(pair[s / 4]),
            _ => _mm512_extracti32x4_epi32::<3>(pair[s / 4]),
        };
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), factor)
    };
    (
        std::array::from_fn(|s| spread(&regs[0..2], s, d)),
        std::array::from_fn(|s| spread(&regs[2..4], s, dmin)),
    )
}

/// Four activation bytes from `at` as one 32-bit value (one load the `dpbusd` can take as
/// its broadcast operand).
#[inline(always)]
fn word(qs: &[i8; QK_K], at: usize) -> i32 {
    assert!(at + 4 <= QK_K);
    // SAFETY: `at..at + 4` lies inside `qs` (checked); the read is unaligned.
    unsafe { qs.as_ptr().add(at).cast::<i32>().read_unaligned() }
}

/// One activation row's sixteen outputs into the tile row `out[..16]`.
fn write(y: &[[f32; ROWS]], out: &mut [f32]) {
    for (row, dst) in y.iter().zip(out.chunks_mut(ROWS)) {
        dst[..ROWS].copy_from_slice(row);
    }
}

/// Writes one (group, block) of sixteen rows to `out`: dword `i` of every row's values in register
/// `i`, then the rows' scales and mins (sub-block-major, 16 bytes each), then `d` and `dmin`.
fn pack_block<'a>(row: impl Fn(usize) -> &'a BlockQ4K, out: &mut [__m512i]) {
    let mut data = Vec::with_capacity(PER_BLOCK);
    let rows: [&BlockQ4K; ROWS] = std::array::from_fn(row);
    let words = |v: [u32; ROWS]| {
        // SAFETY: sixteen u32 are exactly one 512-bit register's bytes.
        unsafe { std::mem::transmute::<[u32; ROWS], __m512i>(v) }
    };
    let bytes = |v: [u8; 64]| {
        // SAFETY: 64 bytes are exactly one 512-bit register's bytes.
        unsafe { std::mem::transmute::<[u8; 64], __m512i>(v) }
    };
    for i in 0..32 {
        data.push(words(std::array::from_fn(|r| {
            let q = &rows[r].qs[4 * i..4 * i + 4];
            u32::from_le_bytes([q[0], q[1], q[2], q[3]])
        })));
    }
    // Every row's eight scales and eight mins, unpacked once.
    let unpacked: [([u8; 8], [u8; 8]); ROWS] =
        std::array::from_fn(|r| scales_mins(&rows[r].scales));
    // Byte `16(s % 4) + r` of pair register `s / 4`: sub-block s, row r.
    for mins in [false, true] {
        for h in 0..2 {
            data.push(bytes(std::array::from_fn(|byte| {
                let (sc, m) = &unpacked[byte % 16];
                let s = 4 * h + byte / 16;
                if mins {
                    m[s]
                } else {
                    sc[s]
                }
            })));
        }
    }
    data.push(bytes(std::array::from_fn(|byte| {
        let (r, hi) = ((byte % 32) / 2, byte % 2);
        if byte < 32 {
            rows[r].d[hi]
        } else {
            rows[r].dmin[hi]
        }
    })));
    out.copy_from_slice(&data);
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::engine::batch::kernels::KQuant;
    use crate::engine::batch::test_values::random;

    /// The repacked matrix against the standard one on candle-quantized weights, and each
    /// activation row's bits the same alone as among thirteen (passes of eight, then ones).
    #[test]
    fn lanes_match_the_standard_kernel_and_rows_are_batch_invariant() {
        if !(super::super::uses_avx512() && super::super::uses_simd()) {
            eprintln!("skipped: this CPU does not run the AVX-512 kernels");
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
        let lanes = Q4KLanes::new(&stored, n, k).expect("16-row groups");
        let standard = KQuant::new(GgmlDType::Q4K, stored, n, k).unwrap();
        let x = random(m * k, 9);
        let (got, want) = (lanes.matmul(&x, m), standard.matmul(&x, m));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "[{i}] {a} vs {b}");
        }
        for r in [0, 7, 8, 12] {
            let alone = lanes.matmul(&x[r * k..(r + 1) * k], 1);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&alone), bits(&got[r * n..(r + 1) * n]), "row {r}");
        }
        assert!(Q4KLanes::new(&Stored::Owned(vec![0u8; 144 * 3].into()), 3, 256).is_none());
    }
}
