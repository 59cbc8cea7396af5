//! AVX-512 VNNI kernels over weights interleaved sixteen rows at a time.
//!
//! Giving each 512-bit lane four values of one weight row (this module's predecessor paired
//! two blocks per vector) spreads a row's 32-value block over eight lanes, and every block
//! costs a conversion, a multiply and two multiply-adds per activation row: with eight
//! activation rows those floating-point steps, not the byte products, fill the multiply
//! pipes. Here the lanes are sixteen *rows*: lane `i` of the vector for step `k` holds values
//! `4k..4k + 4` of row `i`'s block, and the activation's matching four bytes are broadcast
//! to every lane. Eight byte
//! dot products then leave each lane with its row's whole block product, and the block's
//! scaling (one conversion, one multiply, two multiply-adds) is paid once per sixteen rows
//! instead of once per row: about 11 multiply-pipe instructions per 512 products and
//! activation row, where the pair layout needs 24. No horizontal sums remain: each activation
//! row's accumulator *is* its sixteen outputs.
//!
//! Every activation row goes through the same instructions whatever else is in the pass, so
//! a row's outputs never depend on the batch.

use std::arch::x86_64::*;
use std::ops::Range;

use super::formats::{BlockQ4_1, BlockQ8_0, Packed, BLOCK};

/// Weight rows per interleaved group (one per 32-bit lane of a 512-bit vector).
pub const ROWS: usize = 16;

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
}

/// One activation block quantized to 8 bits in natural order, with its scale and sums.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct XBlock {
    qs: [i8; BLOCK],
    /// Scale: `value ≈ d · q`.
    d: f32,
    /// `d · Σq`, what a Q4_1 offset `m` multiplies.
    s: f32,
    /// `-128 · Σq`: undoes the +128 of Q8_0 tile weights.
    fix: i32,
}

/// Sixteen Q4_1 rows' packed bytes for one block: step `k` (0..4) holds, in lane `i`, bytes
/// `4k..4k + 4` of row `i`'s block (whose low nibbles are values `4k..`, high nibbles values
/// `16 + 4k..`).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Q4_1Tile([[u8; 64]; 4]);

/// Sixteen rows' half-precision block constants, lane `i` = row `i`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Halves16([u16; ROWS]);

/// A Q4_1 matrix interleaved sixteen rows at a time (`n` a multiple of 16).
pub struct Q4_1Tiles {
    /// `[group][block]`.
    tiles: Vec<Q4_1Tile>,
    d: Vec<Halves16>,
    m: Vec<Halves16>,
    n: usize,
    kb: usize,
}

impl Q4_1Tiles {
    /// Interleaves `n` rows of `kb` blocks, block `(r, b)` given by `block`; `None` unless
    /// `n` is a multiple of 16.
    pub fn from_fn(n: usize, kb: usize, block: impl Fn(usize, usize) -> BlockQ4_1) -> Option<Self> {
        if !n.is_multiple_of(ROWS) {
            return None;
        }
        let cells = n / ROWS * kb;
        let mut out = Self {
            tiles: Vec::with_capacity(cells),
            d: Vec::with_capacity(cells),
            m: Vec::with_capacity(cells),
            n,
            kb,
        };
        for g in 0..n / ROWS {
            for b in 0..kb {
                let mut tile = Q4_1Tile([[0; 64]; 4]);
                let (mut d, mut m) = (Halves16([0; ROWS]), Halves16([0; ROWS]));
                for i in 0..ROWS {
                    let blk = block(g * ROWS + i, b);
                    for (k, step) in tile.0.iter_mut().enumerate() {
                        step[4 * i..4 * i + 4].copy_from_slice(&blk.qs[4 * k..4 * k + 4]);
                    }
                    d.0[i] = blk.d.to_bits();
                    m.0[i] = blk.m.to_bits();
                }
                out.tiles.push(tile);
                out.d.push(d);
                out.m.push(m);
            }
        }
        Some(out)
    }

    /// Every block as GGUF stores them, row-major.
    fn blocks(&self) -> Vec<BlockQ4_1> {
        (0..self.n)
            .flat_map(|r| (0..self.kb).map(move |b| self.block(r, b)))
            .collect()
    }

    /// Row `r`'s block `b` as GGUF stores it.
    pub fn block(&self, r: usize, b: usize) -> BlockQ4_1 {
        let (cell, i) = ((r / ROWS) * self.kb + b, r % ROWS);
        let mut qs = [0u8; BLOCK / 2];
        for (k, step) in self.tiles[cell].0.iter().enumerate() {
            qs[4 * k..4 * k + 4].copy_from_slice(&step[4 * i..4 * i + 4]);
        }
        BlockQ4_1 {
            d: half::f16::from_bits(self.d[cell].0[i]),
            m: half::f16::from_bits(self.m[cell].0[i]),
            qs,
        }
    }

    /// Group `g`'s sixteen outputs for activation `rows`: `out[(r - rows.start) · 16 + i]` =
    /// weight row `16g + i` · activation row `r`.
    pub fn group_rows(&self, g: usize, xq: &[XBlock], rows: Range<usize>, out: &mut [f32]) {
        let cells = g * self.kb..(g + 1) * self.kb;
        let w = (
            &self.tiles[cells.clone()],
            &self.d[cells.clone()],
            &self.m[cells],
        );
        passes(xq, self.kb, rows, out, |x, n, out| {
            // SAFETY (each arm): these layouts are built only where `available()` holds.
            match n {
                8 => unsafe { q4_1_group::<8>(w, x, out) },
                4 => unsafe { q4_1_group::<4>(w, x, out) },
                _ => unsafe { q4_1_group::<1>(w, x, out) },
            }
        });
    }
}

impl Packed for Q4_1Tiles {
    fn concat(parts: Vec<Self>) -> Self {
        let kb = parts.first().map_or(0, |p| p.kb);
        let mut out = Self {
            tiles: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
            n: 0,
            kb,
        };
        // Whole groups, so the parts' cells follow one another unchanged.
        for p in parts {
            assert_eq!(p.kb, kb, "stacked matrices share their input size");
            out.tiles.extend(p.tiles);
            out.d.extend(p.d);
            out.m.extend(p.m);
            out.n += p.n;
        }
        out
    }

    fn interleave4(a: &Self, b: &Self) -> Option<Self> {
        if a.n != b.n || a.kb != b.kb {
            return None;
        }
        let rows = super::formats::interleave4(&a.blocks(), &b.blocks(), a.kb);
        Self::from_fn(2 * a.n, a.kb, |r, blk| rows[r * a.kb + blk])
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.tiles.as_slice())
            + std::mem::size_of_val(self.d.as_slice())
            + std::mem::size_of_val(self.m.as_slice())
    }
}

/// Sixteen Q8_0 rows' weights for one block, each offset by 128 (unsigned, the form the
/// byte instruction takes): step `k` (0..8) holds, in lane `i`, values `4k..4k + 4` of row `i`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Q8_0Tile([[u8; 64]; 8]);

/// A Q8_0 matrix interleaved sixteen rows at a time (`n` a multiple of 16).
pub struct Q8_0Tiles {
    tiles: Vec<Q8_0Tile>,
    d: Vec<Halves16>,
    kb: usize,
}

impl Q8_0Tiles {
    /// Interleaves row-major blocks (`n` rows of `kb`); `None` unless `n` is a multiple of 16.
    pub fn new(blocks: &[BlockQ8_0], n: usize, kb: usize) -> Option<Self> {
        if !n.is_multiple_of(ROWS) || blocks.len() != n * kb {
            return None;
        }
        let cells = n / ROWS * kb;
        let mut out = Self {
            tiles: Vec::with_capacity(cells),
            d: Vec::with_capacity(cells),
            kb,
        };
        for g in 0..n / ROWS {
            for b in 0..kb {
                let mut tile = Q8_0Tile([[0; 64]; 8]);
                let mut d = Halves16([0; ROWS]);
                for i in 0..ROWS {
                    let blk = &blocks[(g * ROWS + i) * kb + b];
                    for (k, step) in tile.0.iter_mut().enumerate() {
                        for t in 0..4 {
                            step[4 * i + t] = (blk.qs[4 * k + t] as u8) ^ 0x80;
                        }
                    }
                    d.0[i] = blk.d.to_bits();
                }
                out.tiles.push(tile);
                out.d.push(d);
            }
        }
        Some(out)
    }

    /// As [`Q4_1Tiles::group_rows`].
    pub fn group_rows(&self, g: usize, xq: &[XBlock], rows: Range<usize>, out: &mut [f32]) {
        let cells = g * self.kb..(g + 1) * self.kb;
        let w = (&self.tiles[cells.clone()], &self.d[cells]);
        passes(xq, self.kb, rows, out, |x, n, out| {
            // SAFETY (each arm): these layouts are built only where `available()` holds.
            match n {
                8 => unsafe { q8_0_group::<8>(w, x, out) },
                4 => unsafe { q8_0_group::<4>(w, x, out) },
                _ => unsafe { q8_0_group::<1>(w, x, out) },
            }
        });
    }
}

/// Splits `rows` into passes of eight, then four, then one, handing each its activation
/// blocks (`kb` per row), size and output slice (sixteen values per row).
fn passes(
    xq: &[XBlock],
    kb: usize,
    rows: Range<usize>,
    out: &mut [f32],
    mut pass: impl FnMut(&[XBlock], usize, &mut [f32]),
) {
    let mut r = rows.start;
    while r < rows.end {
        let n = match rows.end - r {
            8.. => 8,
            4..8 => 4,
            _ => 1,
        };
        let at = (r - rows.start) * ROWS;
        pass(&xq[r * kb..(r + n) * kb], n, &mut out[at..at + n * ROWS]);
        r += n;
    }
}

/// Quantizes `m` rows of `k` values (`k` a multiple of 32) into blocks, as llama.cpp's Q8_1
/// does (amax / 127, rounded to nearest).
pub fn quantize(x: &[f32], m: usize, k: usize) -> Vec<XBlock> {
    assert!(available() && x.len() == m * k && k.is_multiple_of(BLOCK));
    x.chunks_exact(BLOCK)
        // SAFETY: `available()` reported every feature `quantize_block` is compiled for.
        .map(|chunk| unsafe { quantize_block(chunk) })
        .collect()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_block(v: &[f32]) -> XBlock {
    assert_eq!(v.len(), BLOCK);
    // SAFETY: `v` holds 32 values; the loads read 16 each at offsets 0 and 16.
    let [a, b] = [0, 16].map(|o| unsafe { _mm512_loadu_ps(v.as_ptr().add(o)) });
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    let d = amax / 127.0;
    let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
    // Rounded to nearest (ties to even), the CPU's default rounding mode.
    let [qa, qb] = [a, b].map(|x| _mm512_cvtps_epi32(_mm512_mul_ps(x, inv)));
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    let mut out = XBlock {
        qs: [0; BLOCK],
        d,
        s: d * sum as f32,
        fix: -128 * sum,
    };
    // SAFETY: two 16-byte stores at offsets 0 and 16 of the 32-byte `qs`.
    unsafe {
        _mm_storeu_si128(out.qs.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(out.qs.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(qb));
    }
    out
}

/// How many blocks ahead the kernels prefetch weights. Threads take the groups in chunks,
/// so each chunk starts cold for the hardware prefetchers; past the group's end this asks
/// for the next group's first blocks, which the same thread usually takes next.
const AHEAD: usize = 8;

/// Asks for `n` cache lines from `p` on (a prefetch never faults, whatever the address).
#[inline(always)]
fn prefetch_lines<T>(p: *const T, n: usize) {
    for line in 0..n {
        // SAFETY: prefetching reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(64 * line)) };
    }
}

/// The activation's four bytes `4k..4k + 4`, in every lane.
#[inline(always)]
fn bytes4(x: &XBlock, k: usize) -> __m512i {
    let v = i32::from_le_bytes(
        [
            x.qs[4 * k],
            x.qs[4 * k + 1],
            x.qs[4 * k + 2],
            x.qs[4 * k + 3],
        ]
        .map(|q| q as u8),
    );
    // SAFETY: AVX-512F is enabled in every caller (all are `target_feature` kernels).
    unsafe { _mm512_set1_epi32(v) }
}

/// `N` activation rows (`x`: their blocks, row after row) against one group of sixteen Q4_1
/// rows; `out[j · 16 + i]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q4_1_group<const N: usize>(
    (tiles, d, m): (&[Q4_1Tile], &[Halves16], &[Halves16]),
    x: &[XBlock],
    out: &mut [f32],
) {
    let kb = tiles.len();
    assert!(d.len() == kb && m.len() == kb && x.len() == N * kb && out.len() == N * ROWS);
    let nibbles = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..kb {
        prefetch_lines(tiles.as_ptr().wrapping_add(b + AHEAD), 4);
        prefetch_lines(d.as_ptr().wrapping_add(b + AHEAD), 1);
        prefetch_lines(m.as_ptr().wrapping_add(b + AHEAD), 1);
        // SAFETY: tiles are 64-byte aligned, 4 × 64 bytes; the constants 32-byte aligned.
        let (w, dv, mv) = unsafe {
            let packed: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_load_si512(tiles[b].0[k].as_ptr().cast()));
            let w: [__m512i; 8] = std::array::from_fn(|k| {
                if k < 4 {
                    _mm512_and_si512(packed[k], nibbles)
                } else {
                    _mm512_and_si512(_mm512_srli_epi16(packed[k - 4], 4), nibbles)
                }
            });
            let dv = _mm512_cvtph_ps(_mm256_load_si256(d[b].0.as_ptr().cast()));
            let mv = _mm512_cvtph_ps(_mm256_load_si256(m[b].0.as_ptr().cast()));
            (w, dv, mv)
        };
        for j in 0..N {
            let xb = &x[j * kb + b];
            // Two chains of four byte products (shorter dependency chains), then one sum.
            let mut lo = _mm512_setzero_si512();
            let mut hi = _mm512_setzero_si512();
            for k in 0..4 {
                lo = _mm512_dpbusd_epi32(lo, w[k], bytes4(xb, k));
                hi = _mm512_dpbusd_epi32(hi, w[k + 4], bytes4(xb, k + 4));
            }
            let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
            acc[j] = _mm512_fmadd_ps(dot, _mm512_mul_ps(dv, _mm512_set1_ps(xb.d)), acc[j]);
            acc[j] = _mm512_fmadd_ps(mv, _mm512_set1_ps(xb.s), acc[j]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds N · 16 values.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(j * ROWS), *a) };
    }
}

/// As [`q4_1_group`], for Q8_0 rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q8_0_group<const N: usize>(
    (tiles, d): (&[Q8_0Tile], &[Halves16]),
    x: &[XBlock],
    out: &mut [f32],
) {
    let kb = tiles.len();
    assert!(d.len() == kb && x.len() == N * kb && out.len() == N * ROWS);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..kb {
        prefetch_lines(tiles.as_ptr().wrapping_add(b + AHEAD), 8);
        prefetch_lines(d.as_ptr().wrapping_add(b + AHEAD), 1);
        // SAFETY: tiles are 64-byte aligned, 8 × 64 bytes; the scales 32-byte aligned.
        let (w, dv) = unsafe {
            let w: [__m512i; 8] =
                std::array::from_fn(|k| _mm512_load_si512(tiles[b].0[k].as_ptr().cast()));
            (
                w,
                _mm512_cvtph_ps(_mm256_load_si256(d[b].0.as_ptr().cast())),
            )
        };
        for j in 0..N {
            let xb = &x[j * kb + b];
            let mut lo = _mm512_set1_epi32(xb.fix);
            let mut hi = _mm512_setzero_si512();
            for k in 0..4 {
                lo = _mm512_dpbusd_epi32(lo, w[k], bytes4(xb, k));
                hi = _mm512_dpbusd_epi32(hi, w[k + 4], bytes4(xb, k + 4));
            }
            let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
            acc[j] = _mm512_fmadd_ps(dot, _mm512_mul_ps(dv, _mm512_set1_ps(xb.d)), acc[j]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds N · 16 values.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(j * ROWS), *a) };
    }
}

#[cfg(test)]
impl XBlock {
    /// The block as the portable kernels' Q8_1 block (same values, same scale).
    pub fn to_q8_1(self) -> super::formats::BlockQ8_1 {
        super::formats::BlockQ8_1 {
            d: self.d,
            s: self.s,
            qs: self.qs,
        }
    }
}
