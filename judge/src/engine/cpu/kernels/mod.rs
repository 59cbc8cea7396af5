//! CPU matrix kernels for the batched forward pass.
//!
//! candle 0.11 dispatches AVX2 at run time for Q4_0, Q8_0 and the K-quants, but its Q4_1
//! dot product is scalar, and Q4_1 is the type of most weights in the default model file.
//! This module holds our Q4_1 and Q8_0 matrices and their products: activations quantized
//! to 8 bits per 32-value block (as llama.cpp does), the weights stored as GGUF has them
//! for the 256-bit and portable kernels (`blocks`) or interleaved sixteen rows at a time for
//! the AVX-512 VNNI ones (`tiles16`), chosen once at run time; and a tiled loop that reads
//! each weight row once for every activation row of the batch (that reuse is where batching
//! gains on a memory-bound CPU).

// `unsafe` here: handing disjoint parts of one output buffer to the pool's workers
// (`par_chunks`, `tiled`), each with its SAFETY argument; the SIMD intrinsics are in the
// submodules (and cpu/attention*.rs).
#![allow(unsafe_code)]

use half::f16;

mod blocks;
mod dispatch;
mod formats;
mod kquant;
#[cfg(target_arch = "x86_64")]
mod kquant_avx2;
#[cfg(target_arch = "x86_64")]
mod kquant_avx512;
#[cfg(target_arch = "x86_64")]
mod kquant_lanes;
#[cfg(target_arch = "x86_64")]
mod kquant_lanes_avx2;
#[cfg(target_arch = "x86_64")]
mod kquant_lanes_avx512;
mod math;
mod q8k;
#[cfg(target_arch = "x86_64")]
mod tiles16;
mod tiling;

use blocks::{dot4, dot_fn, q8_dot4, q8_dot_fn};
pub use blocks::{dot_scalar, kernel_name, q8_dot_scalar, quantize_rows};
pub(super) use blocks::{hsum, uses_simd};
pub(super) use dispatch::uses_avx512;
use formats::{interleave4, Packed};
pub use formats::{BlockQ4_1, BlockQ8_0, BlockQ8_1, BLOCK};
pub use kquant::{kquant_kernel_name, KQuant, Stored, QK_K};
#[cfg(target_arch = "x86_64")]
pub(super) use math::exp;
pub(super) use math::swiglu;
pub use q8k::{quantize_q8k, BlockQ8K};
pub use tiling::par_chunks;
use tiling::{block_rows, by_column, tiled, Epilogue, GROUP, TILE};

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
    layout: Layout<BlockQ4_1, Q4_1Tiles>,
    n: usize,
    k: usize,
}

/// How a matrix's blocks are stored: as GGUF stores them (the 256-bit and portable
/// kernels), or interleaved sixteen rows at a time for the AVX-512 kernels (chosen once, at
/// load, where the CPU has them and the row count is a multiple of 16).
enum Layout<B, T> {
    Blocks(Vec<B>),
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Tiles(T),
}

#[cfg(target_arch = "x86_64")]
use tiles16::{Q4_1Tiles, Q8_0Tiles};
/// Stand-in where the AVX-512 kernels do not exist (never built).
#[cfg(not(target_arch = "x86_64"))]
struct NoTiles;
#[cfg(not(target_arch = "x86_64"))]
type Q4_1Tiles = NoTiles;
#[cfg(not(target_arch = "x86_64"))]
type Q8_0Tiles = NoTiles;
#[cfg(not(target_arch = "x86_64"))]
impl Packed for NoTiles {
    fn concat(_: Vec<Self>) -> Self {
        NoTiles
    }
    fn interleave4(_: &Self, _: &Self) -> Option<Self> {
        None
    }
    fn bytes(&self) -> usize {
        0
    }
}

impl<B, T> Layout<B, T> {
    /// Stores `blocks` (`n` rows of `kb` blocks) in the layout the chosen kernels read.
    fn new(blocks: Vec<B>, pack: impl FnOnce(&[B]) -> Option<T>) -> Self {
        if !uses_avx512() {
            return Self::Blocks(blocks);
        }
        match pack(&blocks) {
            Some(t) => Self::Tiles(t),
            None => Self::Blocks(blocks),
        }
    }
}

impl<B, T: Packed> Layout<B, T> {
    fn concat(parts: Vec<Self>) -> Result<Self, Vec<Self>> {
        if parts.iter().all(|p| matches!(p, Self::Blocks(_))) {
            let all = parts.into_iter().flat_map(|p| match p {
                Self::Blocks(b) => b,
                Self::Tiles(_) => Vec::new(),
            });
            return Ok(Self::Blocks(all.collect()));
        }
        if parts.iter().all(|p| matches!(p, Self::Tiles(_))) {
            let all = parts.into_iter().filter_map(|p| match p {
                Self::Tiles(t) => Some(t),
                Self::Blocks(_) => None,
            });
            return Ok(Self::Tiles(T::concat(all.collect())));
        }
        Err(parts)
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Blocks(b) => std::mem::size_of_val(b.as_slice()),
            Self::Tiles(t) => t.bytes(),
        }
    }
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
        let (blocks, kb) = (read_q4_1(bytes), k / BLOCK);
        #[cfg(target_arch = "x86_64")]
        let layout = Layout::new(blocks, |b| Q4_1Tiles::from_fn(n, kb, |r, c| b[r * kb + c]));
        #[cfg(not(target_arch = "x86_64"))]
        let layout = Layout::new(blocks, |_| None);
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
    pub fn swiglu_pair(gate: Self, up: Self) -> Result<Self, Box<(Self, Self)>> {
        if gate.n != up.n || gate.k != up.k || !gate.n.is_multiple_of(4) {
            return Err(Box::new((gate, up)));
        }
        let (n, k) = (2 * gate.n, gate.k);
        let kb = k / BLOCK;
        match (gate.layout, up.layout) {
            (Layout::Blocks(g), Layout::Blocks(u)) => Ok(Self {
                layout: Layout::Blocks(interleave4(&g, &u, kb)),
                n,
                k,
            }),
            (Layout::Tiles(g), Layout::Tiles(u)) => match Packed::interleave4(&g, &u) {
                Some(t) => Ok(Self {
                    layout: Layout::Tiles(t),
                    n,
                    k,
                }),
                None => Err(Box::new((
                    Self {
                        layout: Layout::Tiles(g),
                        n: n / 2,
                        k,
                    },
                    Self {
                        layout: Layout::Tiles(u),
                        n: n / 2,
                        k,
                    },
                ))),
            },
            (gl, ul) => Err(Box::new((
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
            ))),
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
                tiled(
                    self.n,
                    m,
                    (GROUP, TILE),
                    epilogue,
                    by_column(self.n, |col, rows, out| {
                        let w = &blocks[col * kb..(col + 1) * kb];
                        block_rows(w, (&xq, kb), rows, out, (dot_fn(), dot4))
                    }),
                )
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Tiles(t) => {
                let xq = tiles16::quantize(x, m, self.k);
                tiled(
                    self.n,
                    m,
                    (tiles16::ROWS, TILE),
                    epilogue,
                    |g, rows, out| t.group_rows(g, &xq, rows, out),
                )
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Tiles(_) => unreachable!("tiles are built only on x86_64"),
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
    layout: Layout<BlockQ8_0, Q8_0Tiles>,
    n: usize,
    k: usize,
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
        let layout = Layout::new(blocks, |b| Q8_0Tiles::new(b, n, k / BLOCK));
        #[cfg(not(target_arch = "x86_64"))]
        let layout = Layout::new(blocks, |_| None);
        Some(Self { layout, n, k })
    }

    /// Bytes of the weights as the file stores them.
    pub fn bytes(&self) -> usize {
        self.n * (self.k / BLOCK) * Q8_0_SIZE
    }

    /// `x` is `[m, k]` row-major; returns `[m, n]` = `x · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let kb = self.k / BLOCK;
        match &self.layout {
            Layout::Blocks(blocks) => {
                let xq = quantize_rows(x, m, self.k);
                let plain = Epilogue::Plain;
                tiled(
                    self.n,
                    m,
                    (GROUP, TILE),
                    plain,
                    by_column(self.n, |col, rows, out| {
                        let w = &blocks[col * kb..(col + 1) * kb];
                        block_rows(w, (&xq, kb), rows, out, (q8_dot_fn(), q8_dot4))
                    }),
                )
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Tiles(t) => {
                let xq = tiles16::quantize(x, m, self.k);
                tiled(
                    self.n,
                    m,
                    (tiles16::ROWS, TILE),
                    Epilogue::Plain,
                    |g, rows, out| t.group_rows(g, &xq, rows, out),
                )
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Tiles(_) => unreachable!("tiles are built only on x86_64"),
        }
    }
}

#[cfg(test)]
mod kquant_tests;
#[cfg(test)]
pub(crate) mod test_values;
#[cfg(test)]
mod tests;
