//! CPU matrix kernels for the batched forward pass.
//!
//! candle 0.11 dispatches AVX2 at run time for Q4_0, Q8_0 and the K-quants, but its Q4_1
//! dot product is scalar, and Q4_1 is the type of most weights in the default model file.
//! This module holds our Q4_1 × Q8_1 matrix product: activations quantized to 8 bits per
//! 32-value block (as llama.cpp does), an AVX2+FMA dot product chosen at run time with a
//! portable fallback, and a loop that reads each weight row once for every activation row
//! of the batch (that reuse is where batching gains on a memory-bound CPU).

// One of the two modules with `unsafe` (with batch/attention.rs): SIMD intrinsics, and
// handing disjoint parts of one output buffer to the pool's workers (`par_chunks`), each
// with its SAFETY argument.
#![allow(unsafe_code)]

use half::f16;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Values per quantization block (Q4_1 and Q8_1 alike).
pub const BLOCK: usize = 32;

/// One Q4_1 block exactly as GGUF stores it: `value = d * q + m` for 4-bit `q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    d: f16,
    m: f16,
    qs: [u8; BLOCK / 2],
}

/// One activation block: `value ≈ d * q`; `s` is `d * Σq`, the term the weights' offset
/// `m` multiplies.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

/// Bytes of one stored Q4_1 block.
const Q4_1_SIZE: usize = std::mem::size_of::<BlockQ4_1>();
/// Bytes of one stored Q8_0 block.
const Q8_0_SIZE: usize = 2 + BLOCK;

/// GGUF Q4_1 bytes (a whole number of blocks) as blocks.
fn read_q4_1(bytes: &[u8]) -> Vec<BlockQ4_1> {
    bytes
        .chunks_exact(Q4_1_SIZE)
        .map(|b| {
            let mut qs = [0u8; BLOCK / 2];
            qs.copy_from_slice(&b[4..]);
            BlockQ4_1 {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs,
            }
        })
        .collect()
}

/// GGUF Q8_0 bytes (a whole number of blocks) as blocks.
fn read_q8_0(bytes: &[u8]) -> Vec<BlockQ8_0> {
    bytes
        .chunks_exact(Q8_0_SIZE)
        .map(|b| {
            let mut qs = [0i8; BLOCK];
            for (q, &v) in qs.iter_mut().zip(&b[2..]) {
                *q = v as i8;
            }
            BlockQ8_0 {
                d: f16::from_le_bytes([b[0], b[1]]),
                qs,
            }
        })
        .collect()
}

/// A Q4_1 weight matrix of `n` rows (outputs) by `k` columns (inputs).
pub struct Q4_1Matrix {
    layout: Layout<BlockQ4_1, Q4_1Pair>,
    n: usize,
    k: usize,
}

/// How a matrix's blocks are stored: as GGUF stores them (the 256-bit and portable
/// kernels), or repacked two by two for the AVX-512 kernels (chosen once, at load).
enum Layout<B, P> {
    Blocks(Vec<B>),
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Pairs(Vec<P>),
}

#[cfg(target_arch = "x86_64")]
use avx512::{Q4_1Pair, Q8_0Pair};
/// Stand-ins where the AVX-512 kernels do not exist.
#[cfg(not(target_arch = "x86_64"))]
type Q4_1Pair = ();
#[cfg(not(target_arch = "x86_64"))]
type Q8_0Pair = ();

impl<B, P> Layout<B, P> {
    /// Stores `blocks` (rows of `kb` blocks) in the layout the chosen kernels read.
    fn new(blocks: Vec<B>, kb: usize, pack: impl FnOnce(&[B]) -> Vec<P>) -> Self {
        if uses_pairs() && kb.is_multiple_of(2) {
            Self::Pairs(pack(&blocks))
        } else {
            Self::Blocks(blocks)
        }
    }

    fn concat(parts: Vec<Self>) -> Result<Self, Vec<Self>> {
        if parts.iter().all(|p| matches!(p, Self::Blocks(_))) {
            let all = parts.into_iter().flat_map(|p| match p {
                Self::Blocks(b) => b,
                Self::Pairs(_) => Vec::new(),
            });
            return Ok(Self::Blocks(all.collect()));
        }
        if parts.iter().all(|p| matches!(p, Self::Pairs(_))) {
            let all = parts.into_iter().flat_map(|p| match p {
                Self::Pairs(b) => b,
                Self::Blocks(_) => Vec::new(),
            });
            return Ok(Self::Pairs(all.collect()));
        }
        Err(parts)
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Blocks(b) => std::mem::size_of_val(b.as_slice()),
            Self::Pairs(p) => std::mem::size_of_val(p.as_slice()),
        }
    }
}

/// Whether the AVX-512 kernels run (attention follows the matrix kernels' choice).
pub(super) fn uses_avx512() -> bool {
    uses_pairs()
}

/// Whether matrices are repacked for the AVX-512 VNNI kernels: when the CPU has them and
/// `AUTOJ_Q4_1_KERNEL` does not ask for a 256-bit kernel (`avx2` or `avx-vnni`).
fn uses_pairs() -> bool {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let forced =
                std::env::var("AUTOJ_Q4_1_KERNEL").is_ok_and(|v| v == "avx2" || v == "avx-vnni");
            avx512::available() && !forced
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

impl std::fmt::Debug for Q4_1Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q4_1Matrix({}x{})", self.n, self.k)
    }
}

impl Q4_1Matrix {
    /// Reads GGUF Q4_1 bytes (row-major, `n` rows of `k / 32` blocks). `None` when the byte
    /// count or `k` does not fit the format.
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || bytes.len() != n * (k / BLOCK) * Q4_1_SIZE {
            return None;
        }
        let blocks = read_q4_1(bytes);
        #[cfg(target_arch = "x86_64")]
        let layout = Layout::new(blocks, k / BLOCK, avx512::pack_q4_1);
        #[cfg(not(target_arch = "x86_64"))]
        let layout = Layout::new(blocks, k / BLOCK, |_| Vec::new());
        Some(Self { layout, n, k })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input size.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layout.bytes()
    }

    /// `x` is `[m, k]` row-major; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, Epilogue::Plain)
    }

    /// Interleaves a feed-forward block's gate and up matrices four rows at a time, for
    /// [`Self::matmul_swiglu`]; gives them back when their shapes differ or the row count
    /// is not a multiple of four.
    pub fn swiglu_pair(gate: Self, up: Self) -> Result<Self, (Self, Self)> {
        if gate.n != up.n || gate.k != up.k || !gate.n.is_multiple_of(4) {
            return Err((gate, up));
        }
        let (n, k) = (2 * gate.n, gate.k);
        let kb = k / BLOCK;
        match (gate.layout, up.layout) {
            (Layout::Blocks(g), Layout::Blocks(u)) => Ok(Self {
                layout: Layout::Blocks(interleave4(&g, &u, kb)),
                n,
                k,
            }),
            (Layout::Pairs(g), Layout::Pairs(u)) => Ok(Self {
                layout: Layout::Pairs(interleave4(&g, &u, kb / 2)),
                n,
                k,
            }),
            (gl, ul) => Err((
                Self {
                    layout: gl,
                    n: n / 2,
                    k,
                },
                Self {
                    layout: ul,
                    n: n / 2,
                    k,
                },
            )),
        }
    }

    /// For a matrix built by [`Self::swiglu_pair`]: `[m, n / 2]` = `silu(x·Gᵀ) ⊙ (x·Uᵀ)`,
    /// the activation computed by the workers as each tile of products is done.
    pub fn matmul_swiglu(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, Epilogue::SwiGlu)
    }

    fn product(&self, x: &[f32], m: usize, epilogue: Epilogue) -> Vec<f32> {
        let kb = self.k / BLOCK;
        match &self.layout {
            Layout::Blocks(blocks) => {
                let xq = quantize_rows(x, m, self.k);
                tiled(self.n, m, epilogue, |col, rows, out| {
                    let w = &blocks[col * kb..(col + 1) * kb];
                    block_rows(w, &xq, kb, rows, out, dot_fn(), dot4)
                })
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Pairs(pairs) => {
                let (xq, kp) = (avx512::quantize(x, m, self.k), kb / 2);
                tiled(self.n, m, epilogue, |col, rows, out| {
                    avx512::q4_1_rows(&pairs[col * kp..(col + 1) * kp], &xq, kp, rows, out)
                })
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Pairs(_) => unreachable!("pairs are built only on x86_64"),
        }
    }

    /// Stacks matrices with the same input size into one (their outputs side by side), so
    /// matrices applied to one input take one pass and one thread-pool dispatch; gives the
    /// parts back when their input sizes differ.
    pub fn concat(parts: Vec<Self>) -> Result<Self, Vec<Self>> {
        let k = parts.first().map_or(0, |p| p.k);
        if parts.is_empty() || parts.iter().any(|p| p.k != k) {
            return Err(parts);
        }
        let n = parts.iter().map(|p| p.n).sum();
        let rows: Vec<usize> = parts.iter().map(|p| p.n).collect();
        match Layout::concat(parts.into_iter().map(|p| p.layout).collect()) {
            Ok(layout) => Ok(Self { layout, n, k }),
            Err(layouts) => Err(layouts
                .into_iter()
                .zip(rows)
                .map(|(layout, n)| Self { layout, n, k })
                .collect()),
        }
    }
}

/// A Q8_0 weight matrix (the default model's embedding table, used as its output layer):
/// candle has an AVX2 kernel for it, but one that reads the weights again for every row of
/// a batch; this one shares each weight block among four rows.
pub struct Q8_0Matrix {
    layout: Layout<BlockQ8_0, Q8_0Pair>,
    n: usize,
    k: usize,
}

/// One Q8_0 block as GGUF stores it: `value = d * q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    d: f16,
    qs: [i8; BLOCK],
}

impl std::fmt::Debug for Q8_0Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8_0Matrix({}x{})", self.n, self.k)
    }
}

impl Q8_0Matrix {
    /// Reads GGUF Q8_0 bytes (row-major, `n` rows of `k / 32` blocks of 34 bytes).
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || bytes.len() != n * (k / BLOCK) * Q8_0_SIZE {
            return None;
        }
        let blocks = read_q8_0(bytes);
        #[cfg(target_arch = "x86_64")]
        let layout = Layout::new(blocks, k / BLOCK, avx512::pack_q8_0);
        #[cfg(not(target_arch = "x86_64"))]
        let layout = Layout::new(blocks, k / BLOCK, |_| Vec::new());
        Some(Self { layout, n, k })
    }

    /// `x` is `[m, k]` row-major; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let kb = self.k / BLOCK;
        match &self.layout {
            Layout::Blocks(blocks) => {
                let xq = quantize_rows(x, m, self.k);
                tiled(self.n, m, Epilogue::Plain, |col, rows, out| {
                    let w = &blocks[col * kb..(col + 1) * kb];
                    block_rows(w, &xq, kb, rows, out, q8_dot_fn(), q8_dot4)
                })
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Pairs(pairs) => {
                let (xq, kp) = (avx512::quantize(x, m, self.k), kb / 2);
                tiled(self.n, m, Epilogue::Plain, |col, rows, out| {
                    avx512::q8_0_rows(&pairs[col * kp..(col + 1) * kp], &xq, kp, rows, out)
                })
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Pairs(_) => unreachable!("pairs are built only on x86_64"),
        }
    }
}

/// What happens to a tile of products before it is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// Written as they are.
    Plain,
    /// Each group of eight weight rows is four gate rows then four up rows (see
    /// [`Q4_1Matrix::swiglu_pair`]); `silu(gate) · up` is written, half as many columns.
    SwiGlu,
}

/// Rows of `blocks` (each `row_len` long) of `a` and `b` alternating four at a time.
fn interleave4<T: Copy>(a: &[T], b: &[T], row_len: usize) -> Vec<T> {
    let quad = 4 * row_len;
    a.chunks(quad)
        .zip(b.chunks(quad))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect()
}

/// The tiled product shared by the weight types and layouts: work items of (row tile,
/// column group), row-tile major, so one item keeps a tile of activation rows and a group
/// of weight rows in L1 and each weight row is read once per row tile. `col_rows(col, rows,
/// out)` writes weight row `col`'s products with activation `rows` to `out[..rows.len()]`.
/// Each item writes its own cells of the `[m, n]` result (or `[m, n / 2]` after SwiGLU).
fn tiled<F>(n: usize, m: usize, epilogue: Epilogue, col_rows: F) -> Vec<f32>
where
    F: Fn(usize, Range<usize>, &mut [f32]) + Sync,
{
    const GROUP: usize = 8;
    const TILE: usize = 16;
    let tiles = m.div_ceil(TILE);
    let groups = n.div_ceil(GROUP);
    let width = match epilogue {
        Epilogue::Plain => n,
        Epilogue::SwiGlu => n / 2,
    };
    let mut out = vec![0f32; m * width];
    let cells = SharedOut(out.as_mut_ptr());
    let len = out.len();
    candle_core::utils::barrier_pool().execute_chunked(tiles * groups, |items| {
        let mut tile = [0f32; GROUP * TILE];
        for item in items {
            let (t, g) = (item / groups, item % groups);
            let rows = t * TILE..(t * TILE + TILE).min(m);
            let cols = g * GROUP..(g * GROUP + GROUP).min(n);
            for col in cols.clone() {
                col_rows(col, rows.clone(), &mut tile[(col - cols.start) * TILE..]);
            }
            let put = |row: usize, col: usize, v: f32| {
                let at = row * width + col;
                assert!(at < len);
                // SAFETY: `at` is inside `out` (checked); item (t, g) alone writes rows of
                // tile t and columns of group g (or, after SwiGLU, of its half-width group),
                // so no two workers write one cell; the pool returns only when every item
                // is done, and `out` is not touched meanwhile.
                unsafe { *cells.ptr().add(at) = v };
            };
            for (i, row) in rows.enumerate() {
                match epilogue {
                    Epilogue::Plain => {
                        for (c, col) in cols.clone().enumerate() {
                            put(row, col, tile[c * TILE + i]);
                        }
                    }
                    Epilogue::SwiGlu => {
                        for c in 0..cols.len() / 2 {
                            let (gate, up) = (tile[c * TILE + i], tile[(c + 4) * TILE + i]);
                            put(row, g * GROUP / 2 + c, gate / (1.0 + (-gate).exp()) * up);
                        }
                    }
                }
            }
        }
    });
    out
}

/// One weight row (`kb` blocks as stored) against activation `rows` quantized to Q8_1:
/// four rows per pass share each unpacked weight block, the rest one by one (the same
/// arithmetic per row either way).
fn block_rows<B>(
    w: &[B],
    xq: &[BlockQ8_1],
    kb: usize,
    rows: Range<usize>,
    o: &mut [f32],
    dot: fn(&[B], &[BlockQ8_1]) -> f32,
    dot4: fn(&[B], [&[BlockQ8_1]; 4]) -> [f32; 4],
) {
    let x = |r: usize| &xq[r * kb..(r + 1) * kb];
    let mut i = 0;
    while rows.start + i + 4 <= rows.end {
        let r = rows.start + i;
        o[i..i + 4].copy_from_slice(&dot4(w, [x(r), x(r + 1), x(r + 2), x(r + 3)]));
        i += 4;
    }
    for row in rows.start + i..rows.end {
        o[row - rows.start] = dot(w, x(row));
    }
}

/// Runs `f(i, chunk_i)` over consecutive `chunk`-sized pieces of `out` on candle's CPU
/// thread pool (the one its own kernels use, so the two never compete for cores).
pub fn par_chunks<F>(out: &mut [f32], chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let chunk = chunk.max(1);
    let len = out.len();
    let items = len.div_ceil(chunk);
    let base = SharedOut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        for i in range {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: item `i` covers `start..start + n`, inside `out` and disjoint from every
            // other item's range; `out` is borrowed mutably for the whole call and the pool
            // returns only after every item has finished.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(start), n) };
            f(i, piece);
        }
    });
}

/// A raw output pointer handed to pool workers that write disjoint ranges.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// The pointer; a method so closures capture the whole (Sync) wrapper, not the field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: workers only write disjoint ranges (see `par_chunks`) and the owner waits for them.
unsafe impl Send for SharedOut {}
// SAFETY: as above; the pointer itself is never used to read shared data.
unsafe impl Sync for SharedOut {}

/// Quantizes `m` rows of `k` values to Q8_1 blocks.
pub fn quantize_rows(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8_1> {
    debug_assert_eq!(x.len(), m * k);
    x.chunks_exact(BLOCK)
        .map(|chunk| {
            let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(chunk) {
                *q = (v * inv).round() as i8;
                sum += *q as i32;
            }
            BlockQ8_1 {
                d,
                s: d * sum as f32,
                qs,
            }
        })
        .collect()
}

type DotFn = fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32;
type Dot4Fn = fn(&[BlockQ4_1], [&[BlockQ8_1]; 4]) -> [f32; 4];

/// Four dot products of one weight row with four activation rows.
fn dot4(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Dot4Fn> = OnceLock::new();
    let f = CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if dot_fn() as *const () == dot_vnni_entry as *const () {
            return dot4_vnni_entry;
        }
        #[cfg(target_arch = "x86_64")]
        if dot_fn() as *const () == dot_avx2_entry as *const () {
            return dot4_avx2_entry;
        }
        |w, x| x.map(|x| dot_scalar(w, x))
    });
    f(w, x)
}

/// The fastest dot product this CPU runs, chosen once.
pub(super) fn dot_fn() -> DotFn {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<DotFn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            if std::arch::is_x86_feature_detected!("avxvnni") && !force_avx2() {
                return dot_vnni_entry;
            }
            return dot_avx2_entry;
        }
        dot_scalar
    })
}

/// Whether the CPU runs the SIMD kernels (AVX2, FMA and F16C at least); attention uses
/// the same check.
pub(super) fn uses_simd() -> bool {
    dot_fn() as *const () != dot_scalar as *const ()
}

/// The kernel in use, for benchmark reports.
pub fn kernel_name() -> &'static str {
    if uses_pairs() {
        return "avx512-vnni";
    }
    let f = dot_fn() as *const ();
    #[cfg(target_arch = "x86_64")]
    if f == dot_vnni_entry as *const () {
        return "avx-vnni";
    }
    if f == dot_scalar as *const () {
        "scalar"
    } else {
        "avx2"
    }
}

/// `AUTOJ_Q4_1_KERNEL=avx2` skips AVX-VNNI (to compare the two on one machine).
fn force_avx2() -> bool {
    std::env::var("AUTOJ_Q4_1_KERNEL").is_ok_and(|v| v == "avx2")
}

/// Portable Q4_1 · Q8_1 dot product over matching blocks.
pub fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut acc = 0i32;
        for j in 0..BLOCK / 2 {
            let lo = (w.qs[j] & 0x0F) as i32;
            let hi = (w.qs[j] >> 4) as i32;
            acc += lo * x.qs[j] as i32 + hi * x.qs[j + BLOCK / 2] as i32;
        }
        sum += w.d.to_f32() * x.d * acc as f32 + w.m.to_f32() * x.s;
    }
    sum
}

/// Sum of the eight lanes of an `__m256` (inside an AVX function).
macro_rules! hsum {
    ($v:expr) => {{
        let v = $v;
        let lanes = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let lanes = _mm_add_ps(lanes, _mm_movehl_ps(lanes, lanes));
        _mm_cvtss_f32(_mm_add_ss(lanes, _mm_movehdup_ps(lanes)))
    }};
}
pub(super) use hsum;

/// Defines a one-row and a four-row Q4_1 · Q8_1 kernel for one set of CPU features; `$quads`
/// turns 32 unsigned weight bytes and 32 signed activation bytes into eight sums of four
/// products. Both instruction sequences give the same integers, so every variant computes
/// bit-identical results and a row's output never depends on which kernel ran it.
macro_rules! q4_1_kernels {
    ($features:literal, $one:ident, $four:ident, |$wq:ident, $xq:ident| $quads:expr) => {
        /// One row (see the module docs).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $one(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
            // SAFETY (for the caller): compiled for `$features`; called only when present.
            let [r] = $four(w, [x]);
            r
        }

        /// Up to four rows sharing each unpacked weight block.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $four<const N: usize>(w: &[BlockQ4_1], x: [&[BlockQ8_1]; N]) -> [f32; N] {
            use std::arch::x86_64::*;
            let mask = _mm_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut offsets = [0f32; N];
            for (b, w) in w.iter().enumerate() {
                // SAFETY: `qs` holds 16 bytes; unaligned loads are allowed.
                let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr().cast()) };
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                let $wq = _mm256_set_m128i(hi, lo);
                // Both half-precision factors converted in one instruction: [d, m, 0, 0].
                let bits = (w.d.to_bits() as u32 | (w.m.to_bits() as u32) << 16) as i32;
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
                let d = _mm_cvtss_f32(dm);
                let mn = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                for j in 0..N {
                    let xb = &x[j][b];
                    // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                    let $xq = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
                    let quads = $quads;
                    let scale = _mm256_set1_ps(d * xb.d);
                    acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[j]);
                    offsets[j] += mn * xb.s;
                }
            }
            let mut out = [0f32; N];
            for j in 0..N {
                out[j] = hsum!(acc[j]) + offsets[j];
            }
            out
        }
    };
}

q4_1_kernels!("avx2,fma,f16c", dot_avx2, dot4_avx2, |wq, xq| {
    _mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), _mm256_set1_epi16(1))
});
q4_1_kernels!("avx2,fma,f16c,avxvnni", dot_vnni, dot4_vnni, |wq, xq| {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wq, xq)
});

#[cfg(target_arch = "x86_64")]
pub(super) fn dot_avx2_entry(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    // SAFETY: chosen by `dot_fn` only after the CPU reported AVX2, FMA and F16C.
    unsafe { dot_avx2(w, x) }
}

#[cfg(target_arch = "x86_64")]
fn dot4_avx2_entry(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    // SAFETY: chosen by `dot4` only when `dot_fn` found AVX2, FMA and F16C.
    unsafe { dot4_avx2(w, x) }
}

#[cfg(target_arch = "x86_64")]
fn dot_vnni_entry(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    // SAFETY: chosen by `dot_fn` only after the CPU reported AVX2, FMA, F16C and AVX-VNNI.
    unsafe { dot_vnni(w, x) }
}

#[cfg(target_arch = "x86_64")]
fn dot4_vnni_entry(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    // SAFETY: chosen by `dot4` only when `dot_fn` found AVX-VNNI (with AVX2, FMA, F16C).
    unsafe { dot4_vnni(w, x) }
}

/// Portable Q8_0 · Q8 dot product over matching blocks.
pub fn q8_dot_scalar(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let acc: i32 =
            w.qs.iter()
                .zip(&x.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += w.d.to_f32() * x.d * acc as f32;
    }
    sum
}

/// Defines a one-row and an N-row Q8_0 kernel for one set of CPU features. The weights'
/// absolute values (unsigned) meet the activations carrying the weights' signs, the form the
/// unsigned-by-signed byte instructions take.
macro_rules! q8_0_kernels {
    ($features:literal, $one:ident, $four:ident, |$aw:ident, $sx:ident| $quads:expr) => {
        /// One row.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $one(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
            let [r] = $four(w, [x]);
            r
        }

        /// Up to four rows sharing each weight block.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $four<const N: usize>(w: &[BlockQ8_0], x: [&[BlockQ8_1]; N]) -> [f32; N] {
            use std::arch::x86_64::*;
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, w) in w.iter().enumerate() {
                // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                let wq = unsafe { _mm256_loadu_si256(w.qs.as_ptr().cast()) };
                let $aw = _mm256_sign_epi8(wq, wq);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(w.d.to_bits() as i32)));
                for j in 0..N {
                    let xb = &x[j][b];
                    // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                    let xq = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
                    let $sx = _mm256_sign_epi8(xq, wq);
                    let quads = $quads;
                    let scale = _mm256_set1_ps(d * xb.d);
                    acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[j]);
                }
            }
            let mut out = [0f32; N];
            for j in 0..N {
                out[j] = hsum!(acc[j]);
            }
            out
        }
    };
}

q8_0_kernels!("avx2,fma,f16c", q8_dot_avx2, q8_dot4_avx2, |aw, sx| {
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
});
q8_0_kernels!(
    "avx2,fma,f16c,avxvnni",
    q8_dot_vnni,
    q8_dot4_vnni,
    |aw, sx| { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx) }
);

type Q8DotFn = fn(&[BlockQ8_0], &[BlockQ8_1]) -> f32;
type Q8Dot4Fn = fn(&[BlockQ8_0], [&[BlockQ8_1]; 4]) -> [f32; 4];

/// The Q8_0 kernels matching the Q4_1 choice (same CPU features).
fn q8_kernels() -> (Q8DotFn, Q8Dot4Fn) {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<(Q8DotFn, Q8Dot4Fn)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let chosen = dot_fn() as *const ();
            if chosen == dot_vnni_entry as *const () {
                // SAFETY (both): chosen only after the CPU reported AVX2, FMA, F16C, AVX-VNNI.
                return (
                    |w, x| unsafe { q8_dot_vnni(w, x) },
                    |w, x| unsafe { q8_dot4_vnni(w, x) },
                );
            }
            if chosen == dot_avx2_entry as *const () {
                // SAFETY (both): chosen only after the CPU reported AVX2, FMA and F16C.
                return (
                    |w, x| unsafe { q8_dot_avx2(w, x) },
                    |w, x| unsafe { q8_dot4_avx2(w, x) },
                );
            }
        }
        (q8_dot_scalar, |w, x| x.map(|x| q8_dot_scalar(w, x)))
    })
}

fn q8_dot_fn() -> Q8DotFn {
    q8_kernels().0
}

fn q8_dot4(w: &[BlockQ8_0], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    (q8_kernels().1)(w, x)
}

#[cfg(test)]
mod tests;
