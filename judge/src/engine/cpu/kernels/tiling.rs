//! How the products are split into work items on candle's thread pool: tiles of activation
//! rows by groups of output columns, each item writing its own cells of the result, and
//! the per-column adapters the block kernels plug into.

// `unsafe`: workers write disjoint cells of one output through a shared raw pointer.
#![allow(unsafe_code)]

use std::ops::Range;

use super::formats::BlockQ8_1;
use super::math::swiglu;

/// What happens to a tile of products before it is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Epilogue {
    /// Written as they are.
    Plain,
    /// Each group of eight weight rows is four gate rows then four up rows (see
    /// [`Q4_1Matrix::swiglu_pair`]); `silu(gate) · up` is written, half as many columns.
    SwiGlu,
}

/// Output columns per work item for the per-column (256-bit and portable) kernels.
pub(super) const GROUP: usize = 8;
/// Activation rows per work item for the Q4_1 / Q8_0 kernels.
pub(super) const TILE: usize = 16;
/// Activation rows per work item for the K-quant kernels: at 7B width each weight row is
/// streamed from memory once per tile, and taller tiles measured faster there.
pub(super) const KQUANT_TILE: usize = 64;
/// The tallest tile any kernel uses.
const MAX_TILE: usize = 64;
/// The widest column group a layout uses (the sixteen-row tiles).
const MAX_GROUP: usize = 16;

/// The tiled product shared by the weight types and layouts: work items of (row tile,
/// column group), row-tile major, so one item keeps a tile of activation rows and a group
/// of weight rows in L1 and each weight row is read once per row tile. `fill(g, rows, out)`
/// writes group `g`'s products with activation `rows`, row by row: `out[i · group + c]` for
/// the `i`-th row and the group's `c`-th column. Each item writes its own cells of the
/// `[m, n]` result (or `[m, n / 2]` after SwiGLU).
pub(super) fn tiled<F>(
    n: usize,
    m: usize,
    (group, tile_rows): (usize, usize),
    epilogue: Epilogue,
    fill: F,
) -> Vec<f32>
where
    F: Fn(usize, Range<usize>, &mut [f32]) + Sync,
{
    let tiles = m.div_ceil(tile_rows);
    let groups = n.div_ceil(group);
    let width = match epilogue {
        Epilogue::Plain => n,
        Epilogue::SwiGlu => n / 2,
    };
    assert!(group <= MAX_GROUP && tile_rows <= MAX_TILE);
    let mut out = vec![0f32; m * width];
    let cells = SharedOut(out.as_mut_ptr());
    let len = out.len();
    candle_core::utils::barrier_pool().execute_chunked(tiles * groups, |items| {
        let mut tile = [0f32; MAX_GROUP * MAX_TILE];
        let (mut gate, mut up, mut act) = (
            [0f32; MAX_GROUP * MAX_TILE / 2],
            [0f32; MAX_GROUP * MAX_TILE / 2],
            [0f32; MAX_GROUP * MAX_TILE / 2],
        );
        for item in items {
            let (t, g) = (item / groups, item % groups);
            let rows = t * tile_rows..(t * tile_rows + tile_rows).min(m);
            let cols = g * group..(g * group + group).min(n);
            fill(g, rows.clone(), &mut tile[..rows.len() * group]);
            let (at, n_out) = match epilogue {
                Epilogue::Plain => (cols.start, cols.len()),
                Epilogue::SwiGlu => (cols.start / 2, cols.len() / 2),
            };
            if epilogue == Epilogue::SwiGlu {
                // Every eight columns are four gate rows, then their four up rows; the whole
                // tile's activations in one call (vector lanes stay full).
                let count = rows.len() * n_out;
                for (i, line) in tile.chunks_exact(group).take(rows.len()).enumerate() {
                    for c in 0..n_out {
                        let (unit, lane) = (c / 4, c % 4);
                        gate[i * n_out + c] = line[unit * 8 + lane];
                        up[i * n_out + c] = line[unit * 8 + 4 + lane];
                    }
                }
                swiglu(&gate[..count], &up[..count], &mut act[..count]);
            }
            for (i, row) in rows.enumerate() {
                let src = match epilogue {
                    Epilogue::Plain => &tile[i * group..i * group + n_out],
                    Epilogue::SwiGlu => &act[i * n_out..(i + 1) * n_out],
                };
                let start = row * width + at;
                assert!(start + n_out <= len);
                // SAFETY: `start..start + n_out` is inside `out` (checked); item (t, g) alone
                // writes rows of tile t and the columns of group g (or, after SwiGLU, of its
                // half-width group), so no two workers write one cell; the pool returns only
                // when every item is done, and `out` is not touched meanwhile.
                let dst = unsafe { std::slice::from_raw_parts_mut(cells.ptr().add(start), n_out) };
                dst.copy_from_slice(src);
            }
        }
    });
    out
}

/// Adapts a per-column kernel (`col_rows(col, rows, out)` writes weight row `col`'s products
/// with activation `rows` to `out[..rows.len()]`) to [`tiled`]'s groups of [`GROUP`] columns.
pub(super) fn by_column<F>(n: usize, col_rows: F) -> impl Fn(usize, Range<usize>, &mut [f32]) + Sync
where
    F: Fn(usize, Range<usize>, &mut [f32]) + Sync,
{
    move |g, rows, out| {
        let mut column = [0f32; MAX_TILE];
        for (c, col) in (g * GROUP..(g * GROUP + GROUP).min(n)).enumerate() {
            col_rows(col, rows.clone(), &mut column[..rows.len()]);
            for (i, v) in column[..rows.len()].iter().enumerate() {
                out[i * GROUP + c] = *v;
            }
        }
    }
}

/// One weight row's dot product with one quantized activation row (`A`: the activation
/// block type, Q8_1 or Q8_K).
type BlockDot<B, A = BlockQ8_1> = fn(&[B], &[A]) -> f32;
/// The same against `N` activation rows at once.
type BlockDotN<B, const N: usize, A = BlockQ8_1> = fn(&[B], [&[A]; N]) -> [f32; N];

/// One weight row (`kb` blocks as stored) against activation `rows` (`xq`, `kb` blocks each)
/// quantized to `A`: `N` rows per pass share each unpacked weight block, the rest one by
/// one (the same arithmetic per row either way).
pub(super) fn block_rows<B, A, const N: usize>(
    w: &[B],
    (xq, kb): (&[A], usize),
    rows: Range<usize>,
    o: &mut [f32],
    (dot, dotn): (BlockDot<B, A>, BlockDotN<B, N, A>),
) {
    let x = |r: usize| &xq[r * kb..(r + 1) * kb];
    let mut i = 0;
    while rows.start + i + N <= rows.end {
        let r = rows.start + i;
        o[i..i + N].copy_from_slice(&dotn(w, std::array::from_fn(|j| x(r + j))));
        i += N;
    }
    for row in rows.start + i..rows.end {
        o[row - rows.start] = dot(w, x(row));
    }
}

/// Runs `f(i, chunk_i)` over consecutive `chunk`-sized pieces of `out` on candle's CPU
/// thread pool (the one its own kernels use, so the two never compete for cores).
pub fn par_chunks<T: Send, F>(out: &mut [T], chunk: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync,
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
struct SharedOut<T>(*mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The pointer; a method so closures capture the whole (Sync) wrapper, not the field.
    fn ptr(self) -> *mut T {
        self.0
    }
}
// SAFETY: workers only write disjoint ranges (see `par_chunks`) of `Send` values and the
// owner waits for them.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above; the pointer itself is never used to read shared data.
unsafe impl<T: Send> Sync for SharedOut<T> {}
