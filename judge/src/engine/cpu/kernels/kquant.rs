//! K-quant weights (Q4_K, Q5_K, Q6_K) as GGUF stores them, and their products.
//!
//! A K-quant super-block holds 256 values in sub-blocks that share 6-bit (Q4_K, Q5_K) or
//! 8-bit (Q6_K) scales under one half-precision factor. The activations meet them quantized
//! to Q8_K: one f32 factor per 256 values, 8-bit values, and the sum of every 16 of them
//! (what the weights' offsets multiply). The integer part of a product is exact, so the
//! AVX2 and portable kernels differ only in the order of float additions, and one row's
//! result never depends on how many rows share its pass.
//!
//! The weights are never copied: a matrix reads its blocks straight from the memory-mapped
//! model file (or from bytes it owns, in tests).

use std::marker::PhantomData;
use std::ops::{Deref, Range};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use candle_core::quantized::GgmlDType;
use half::f16;

use super::blocks::uses_simd;
use super::dispatch::uses_avx512;
use super::q8k::{quantize_q8k, BlockQ8K};
use super::tiling::{block_rows, by_column, tiled, Epilogue, GROUP, KQUANT_TILE};

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// A Q4_K super-block (144 bytes): eight sub-blocks of 32 four-bit values, each with a
/// 6-bit scale and a 6-bit min: `value = d * sc * q - dmin * m`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub(super) d: [u8; 2],
    pub(super) dmin: [u8; 2],
    pub(super) scales: [u8; 12],
    pub(super) qs: [u8; QK_K / 2],
}

/// A Q5_K super-block (176 bytes): Q4_K with a fifth bit per value in `qh`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub(super) d: [u8; 2],
    pub(super) dmin: [u8; 2],
    pub(super) scales: [u8; 12],
    pub(super) qh: [u8; QK_K / 8],
    pub(super) qs: [u8; QK_K / 2],
}

/// A Q6_K super-block (210 bytes): sixteen sub-blocks of 16 six-bit values (low four bits
/// in `ql`, high two in `qh`), each with a signed 8-bit scale: `value = d * sc * (q - 32)`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub(super) ql: [u8; QK_K / 2],
    pub(super) qh: [u8; QK_K / 4],
    pub(super) scales: [i8; QK_K / 16],
    pub(super) d: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

fn half(bytes: [u8; 2]) -> f32 {
    f16::from_le_bytes(bytes).to_f32()
}

/// The eight 6-bit scales and eight 6-bit mins packed in a Q4_K / Q5_K block's 12 bytes:
/// bytes 0-3 hold scales 0-3 (and the top bits of scales 4-7), bytes 4-7 mins 0-3 (and
/// the top bits of mins 4-7), bytes 8-11 the low four bits of scales and mins 4-7.
pub(super) fn scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// What the matrix code needs of a super-block type.
pub trait SuperBlock: Pod + Sync + Send {
    /// The GGUF type's name, for reports.
    const NAME: &'static str;
    /// Writes the block's 256 values to `out` (embedding rows and tests).
    fn dequantize(&self, out: &mut [f32]);
    /// The portable product of one row of blocks with `N` activation rows.
    fn dot_portable<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N];
    /// The AVX2 product (same integers, float sums in vector lanes).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N];
    /// The AVX-512 VNNI product (same integers, 512-bit lanes).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI, AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N];
}

impl SuperBlock for BlockQ4K {
    const NAME: &'static str = "q4_k";

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (half(self.d), half(self.dmin));
        let (sc, mn) = scales_mins(&self.scales);
        for (j, q) in self.qs.chunks_exact(32).enumerate() {
            let (lo, hi) = out[64 * j..64 * j + 64].split_at_mut(32);
            let (d1, m1) = (d * sc[2 * j] as f32, dmin * mn[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * mn[2 * j + 1] as f32);
            for ((l, h), &b) in lo.iter_mut().zip(hi).zip(q) {
                *l = d1 * (b & 0x0F) as f32 - m1;
                *h = d2 * (b >> 4) as f32 - m2;
            }
        }
    }

    fn dot_portable<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        offset_dot(
            w,
            x,
            |w| (half(w.d), half(w.dmin), scales_mins(&w.scales)),
            |w, i| {
                let b = w.qs[(i / 64) * 32 + i % 32];
                if i % 64 < 32 {
                    b & 0x0F
                } else {
                    b >> 4
                }
            },
        )
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { super::kquant_avx2::q4k(w, x) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees the AVX-512 and AVX2 features.
        unsafe { super::kquant_avx512::q4k(w, x) }
    }
}

impl SuperBlock for BlockQ5K {
    const NAME: &'static str = "q5_k";

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (half(self.d), half(self.dmin));
        let (sc, mn) = scales_mins(&self.scales);
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            let s = i / 32;
            *o = d * sc[s] as f32 * q5(self, i) as f32 - dmin * mn[s] as f32;
        }
    }

    fn dot_portable<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        offset_dot(
            w,
            x,
            |w| (half(w.d), half(w.dmin), scales_mins(&w.scales)),
            q5,
        )
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { super::kquant_avx2::q5k(w, x) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees the AVX-512 and AVX2 features.
        unsafe { super::kquant_avx512::q5k(w, x) }
    }
}

/// Value `i` (0..256) of a Q5_K block, 0..32: chunk `i / 64` takes its low half from the
/// low nibbles and bit `2 · chunk` of `qh`, its high half from the high nibbles and the
/// next bit.
fn q5(w: &BlockQ5K, i: usize) -> u8 {
    let (chunk, l) = (i / 64, i % 32);
    let b = w.qs[chunk * 32 + l];
    let (nibble, bit) = if i % 64 < 32 {
        (b & 0x0F, 2 * chunk)
    } else {
        (b >> 4, 2 * chunk + 1)
    };
    nibble | (((w.qh[l] >> bit) & 1) << 4)
}

/// The portable Q4_K / Q5_K product: `Σ d·sc·q·x − dmin·m·Σx` per 32-value sub-block, the
/// integer sums exact; `head` reads a block's factors and scales, `value(w, i)` its `i`-th
/// unsigned value.
fn offset_dot<B, const N: usize>(
    w: &[B],
    x: [&[BlockQ8K]; N],
    head: impl Fn(&B) -> (f32, f32, ([u8; 8], [u8; 8])),
    value: impl Fn(&B, usize) -> u8,
) -> [f32; N] {
    let mut out = [0f32; N];
    for (b, wb) in w.iter().enumerate() {
        let (d, dmin, (sc, mn)) = head(wb);
        let q: [u8; QK_K] = std::array::from_fn(|i| value(wb, i));
        for (o, xr) in out.iter_mut().zip(x) {
            let xb = &xr[b];
            let (mut dots, mut mins) = (0i32, 0i32);
            for s in 0..8 {
                let part: i32 = (32 * s..32 * s + 32)
                    .map(|i| q[i] as i32 * xb.qs[i] as i32)
                    .sum();
                dots += sc[s] as i32 * part;
                mins += mn[s] as i32 * (xb.bsums[2 * s] as i32 + xb.bsums[2 * s + 1] as i32);
            }
            *o += xb.d * (d * dots as f32 - dmin * mins as f32);
        }
    }
    out
}

impl SuperBlock for BlockQ6K {
    const NAME: &'static str = "q6_k";

    fn dequantize(&self, out: &mut [f32]) {
        let d = half(self.d);
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            *o = d * self.scales[i / 16] as f32 * (q6(self, i) as i32 - 32) as f32;
        }
    }

    fn dot_portable<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        let mut out = [0f32; N];
        for (b, wb) in w.iter().enumerate() {
            let d = half(wb.d);
            let q: [u8; QK_K] = std::array::from_fn(|i| q6(wb, i));
            for (o, xr) in out.iter_mut().zip(x) {
                let xb = &xr[b];
                let (mut dots, mut offs) = (0i32, 0i32);
                for g in 0..16 {
                    let part: i32 = (16 * g..16 * g + 16)
                        .map(|i| q[i] as i32 * xb.qs[i] as i32)
                        .sum();
                    dots += wb.scales[g] as i32 * part;
                    offs += wb.scales[g] as i32 * xb.bsums[g] as i32;
                }
                *o += xb.d * d * (dots - 32 * offs) as f32;
            }
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { super::kquant_avx2::q6k(w, x) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(w: &[Self], x: [&[BlockQ8K]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees the AVX-512 and AVX2 features.
        unsafe { super::kquant_avx512::q6k(w, x) }
    }
}

/// Value `i` (0..256) of a Q6_K block before the −32 offset, 0..64. Each 128-value half
/// has 64 `ql` bytes and 32 `qh` bytes; quarter `t` of a half takes the low (t = 0, 1) or
/// high (t = 2, 3) nibbles of `ql[32 · (t % 2)..]` and bits `2t..2t+2` of `qh`.
fn q6(w: &BlockQ6K, i: usize) -> u8 {
    let (h, t, l) = (i / 128, (i % 128) / 32, i % 32);
    let b = w.ql[64 * h + 32 * (t % 2) + l];
    let nibble = if t < 2 { b & 0x0F } else { b >> 4 };
    nibble | (((w.qh[32 * h + l] >> (2 * t)) & 3) << 4)
}

/// A weight matrix's bytes: owned, or a range of a memory-mapped model file (shared by the
/// matrices that read it, and by the embedding when the output matrix is tied to it).
#[derive(Clone)]
pub enum Stored {
    /// Bytes read into memory.
    Owned(Arc<[u8]>),
    /// `range` of the mapped file.
    Mapped {
        /// The whole file.
        map: Arc<memmap2::Mmap>,
        /// This tensor's bytes.
        range: Range<usize>,
    },
}

impl Deref for Stored {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(b) => b,
            Self::Mapped { map, range } => &map[range.clone()],
        }
    }
}

/// A K-quant matrix of `n` rows (outputs) by `k` columns (inputs), each row `k / 256`
/// super-blocks.
pub struct KMatrix<B> {
    w: Stored,
    n: usize,
    k: usize,
    _block: PhantomData<B>,
}

type KDot<B> = fn(&[B], &[BlockQ8K]) -> f32;
type KDotN<B, const N: usize> = fn(&[B], [&[BlockQ8K]; N]) -> [f32; N];

/// The K-quant product paths: the AVX-512 and AVX2 kernels take eight activation rows per
/// pass (each unpacked weight block serves eight rows; with AVX2's sixteen registers some
/// of the block spills to the stack, still 12-25% faster than four rows in a kernel timing),
/// then four for the rest; the portable one four.
enum Kernels<B> {
    Eight(KDot<B>, KDotN<B, 4>, KDotN<B, 8>),
    Four(KDot<B>, KDotN<B, 4>),
}

impl<B: SuperBlock> KMatrix<B> {
    /// `n` rows of `k` values stored in `w`; `None` when `k` is not a multiple of 256 or
    /// the byte count does not match.
    pub fn new(w: Stored, n: usize, k: usize) -> Option<Self> {
        let size = std::mem::size_of::<B>();
        if !k.is_multiple_of(QK_K) || w.len() != n * (k / QK_K) * size {
            return None;
        }
        Some(Self {
            w,
            n,
            k,
            _block: PhantomData,
        })
    }

    fn blocks(&self) -> &[B] {
        // Blocks are byte arrays (alignment 1) and the length was checked in `new`.
        bytemuck::cast_slice(&self.w)
    }

    /// The kernels this CPU runs for `B`, chosen with the Q4_1 kernels' checks (so
    /// `AUTOJ_Q4_1_KERNEL=avx2` also forces the AVX2 path here).
    fn kernels() -> Kernels<B> {
        #[cfg(target_arch = "x86_64")]
        if uses_avx512() && uses_simd() {
            // SAFETY (all three): `uses_avx512` holds only where the CPU has AVX-512 F, BW and
            // VNNI, `uses_simd` where it has AVX2, FMA and F16C.
            return Kernels::Eight(
                |w, x| unsafe { B::dot_avx512(w, [x]) }[0],
                |w, x| unsafe { B::dot_avx512(w, x) },
                |w, x| unsafe { B::dot_avx512(w, x) },
            );
        }
        #[cfg(target_arch = "x86_64")]
        if uses_simd() {
            // SAFETY (all three): `uses_simd` holds only where the CPU has AVX2, FMA and F16C.
            return Kernels::Eight(
                |w, x| unsafe { B::dot_avx2(w, [x]) }[0],
                |w, x| unsafe { B::dot_avx2(w, x) },
                |w, x| unsafe { B::dot_avx2(w, x) },
            );
        }
        Kernels::Four(
            |w, x| B::dot_portable(w, [x])[0],
            |w, x| B::dot_portable(w, x),
        )
    }

    /// `xq` is `[m, k]` quantized by [`quantize_q8k`]; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul_q8k(&self, xq: &[BlockQ8K], m: usize) -> Vec<f32> {
        let kb = self.k / QK_K;
        assert_eq!(xq.len(), m * kb, "activations of another width");
        let blocks = self.blocks();
        let kernels = Self::kernels();
        let column = |col: usize, rows: Range<usize>, out: &mut [f32]| {
            let w = &blocks[col * kb..(col + 1) * kb];
            match kernels {
                Kernels::Eight(one, four, eight) => {
                    let split = rows.start + rows.len() / 8 * 8;
                    let (by8, rest) = out.split_at_mut(split - rows.start);
                    block_rows(w, (xq, kb), rows.start..split, by8, (one, eight));
                    block_rows(w, (xq, kb), split..rows.end, rest, (one, four));
                }
                Kernels::Four(one, four) => block_rows(w, (xq, kb), rows, out, (one, four)),
            }
        };
        tiled(
            self.n,
            m,
            (GROUP, KQUANT_TILE),
            Epilogue::Plain,
            by_column(self.n, column),
        )
    }

    /// Row `r`'s values (an embedding lookup); `None` past the last row.
    pub fn row(&self, r: usize, out: &mut [f32]) -> Option<()> {
        let kb = self.k / QK_K;
        let row = self.blocks().get(r * kb..(r + 1) * kb)?;
        for (b, dst) in row.iter().zip(out.chunks_exact_mut(QK_K)) {
            b.dequantize(dst);
        }
        Some(())
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.n
    }
}

/// A K-quant matrix of any of the three types.
pub enum KQuant {
    /// Q4_K weights.
    Q4K(KMatrix<BlockQ4K>),
    /// Q5_K weights.
    Q5K(KMatrix<BlockQ5K>),
    /// Q6_K weights.
    Q6K(KMatrix<BlockQ6K>),
    /// Q4_K, Q5_K or Q6_K weights repacked with rows in the vector lanes (AVX-512 or AVX2;
    /// `AUTOJ_KQUANT_LANES=0` turns it off).
    #[cfg(target_arch = "x86_64")]
    Lanes(super::kquant_lanes::Lanes),
}

impl KQuant {
    /// Whether the kernels take GGUF type `dtype` (checked before the bytes are gathered).
    pub fn takes(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K)
    }

    /// The matrix of GGUF type `dtype` (Q4_K, Q5_K or Q6_K); `None` for other types or
    /// shapes the kernels do not take.
    pub fn new(dtype: GgmlDType, w: Stored, n: usize, k: usize) -> Option<Self> {
        match dtype {
            GgmlDType::Q4K => KMatrix::new(w, n, k).map(Self::Q4K),
            GgmlDType::Q5K => KMatrix::new(w, n, k).map(Self::Q5K),
            GgmlDType::Q6K => KMatrix::new(w, n, k).map(Self::Q6K),
            _ => None,
        }
    }

    /// A K-quant matrix repacked with rows in the lanes where the CPU runs the AVX-512
    /// or AVX2 kernels (unless `AUTOJ_KQUANT_LANES=0`); anything else unchanged. For the
    /// products' matrices only: the repacked form has no row lookup.
    pub fn into_lanes(self) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use super::kquant_lanes::Lanes;
            let packed = match &self {
                Self::Q4K(w) => Lanes::new(GgmlDType::Q4K, &w.w, w.n, w.k),
                Self::Q5K(w) => Lanes::new(GgmlDType::Q5K, &w.w, w.n, w.k),
                Self::Q6K(w) => Lanes::new(GgmlDType::Q6K, &w.w, w.n, w.k),
                Self::Lanes(_) => None,
            };
            if let Some(p) = packed {
                return Self::Lanes(p);
            }
        }
        self
    }

    /// `x` is `[m, k]` row-major; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_q8k(&quantize_q8k(x, m, self.columns()), m)
    }

    /// See [`KMatrix::matmul_q8k`]: matrices that share an input quantize it once.
    pub fn matmul_q8k(&self, xq: &[BlockQ8K], m: usize) -> Vec<f32> {
        match self {
            Self::Q4K(w) => w.matmul_q8k(xq, m),
            Self::Q5K(w) => w.matmul_q8k(xq, m),
            Self::Q6K(w) => w.matmul_q8k(xq, m),
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(w) => w.matmul_q8k(xq, m),
        }
    }

    /// Input size.
    pub fn columns(&self) -> usize {
        match self {
            Self::Q4K(w) => w.k,
            Self::Q5K(w) => w.k,
            Self::Q6K(w) => w.k,
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(w) => w.columns(),
        }
    }

    /// See [`KMatrix::row`]; `None` for a repacked matrix (never an embedding table).
    pub fn row(&self, r: usize, out: &mut [f32]) -> Option<()> {
        match self {
            Self::Q4K(w) => w.row(r, out),
            Self::Q5K(w) => w.row(r, out),
            Self::Q6K(w) => w.row(r, out),
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(_) => None,
        }
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        match self {
            Self::Q4K(w) => w.rows(),
            Self::Q5K(w) => w.rows(),
            Self::Q6K(w) => w.rows(),
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(w) => w.rows(),
        }
    }

    /// Bytes of weights (in the mapped file or owned).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Q4K(w) => w.w.len(),
            Self::Q5K(w) => w.w.len(),
            Self::Q6K(w) => w.w.len(),
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(w) => w.bytes(),
        }
    }

    /// The weight type's name (and layout, where repacked).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Q4K(_) => BlockQ4K::NAME,
            Self::Q5K(_) => BlockQ5K::NAME,
            Self::Q6K(_) => BlockQ6K::NAME,
            #[cfg(target_arch = "x86_64")]
            Self::Lanes(w) => w.name(),
        }
    }
}

/// The K-quant kernel path in use, for benchmark reports ("avx512-vnni", "avx2" or
/// "portable").
pub fn kquant_kernel_name() -> &'static str {
    if uses_avx512() && uses_simd() {
        "avx512-vnni"
    } else if uses_simd() {
        "avx2"
    } else {
        "portable"
    }
}
