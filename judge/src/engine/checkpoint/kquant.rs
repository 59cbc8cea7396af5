//! Q4_K, Q5_K and Q6_K blocks written the way `llama-quantize` writes them (without an
//! importance matrix), so a file of ours loses no more to rounding than one of llama.cpp.
//!
//! Candle 0.11's quantizers for these types are ggml's earlier algorithms (one refinement
//! of a min-max fit); ggml's current reference searches a range of scales with weighted
//! least squares, which measured 2.4-4.4% less RMS error per tensor. The algorithms here
//! are that search, as ggml describes it:
//!
//! - **Q4_K / Q5_K**: each 32-value sub-block gets a scale and a minimum. The weights are
//!   `sqrt(mean x²) + |x|`; starting from the min-max fit, `steps + 1` inverse scales
//!   `(levels + start + 0.1·i) / (max − min)` are tried, each followed by the weighted
//!   least-squares scale and minimum for the levels it rounds to (the minimum held at 0
//!   where it would come out positive), keeping the one of least weighted squared error.
//!   The eight scales and minimums are then stored as 6-bit fractions of the largest, and
//!   every value rounded again against the stored (f16 × 6-bit) scale and minimum.
//! - **Q6_K**: each 16-value sub-block gets a signed scale: levels rounded at
//!   `−32 / x_max` and at 18 neighbouring inverse scales `−(32 + 0.1·i) / x_max`, weights
//!   `x²`, keeping the least-squares scale of the best fit; the sixteen scales are stored as
//!   8-bit fractions of the largest in magnitude and every value rounded again.
//!
//! Rounding is to nearest with ties to even, as ggml's `nearest_int`. Every arithmetic
//! step is f32 in ggml's order, so the bytes usually equal llama-quantize's; a compiler
//! that fuses multiply-adds may round a tie the other way in a few blocks.
//!
//! Block layouts are ggml's (`block_q4_K`, `block_q5_K`, `block_q6_K`), read by candle's
//! and llama.cpp's kernels alike.

use candle_core::quantized::GgmlDType;
use half::f16;

/// Values per super-block.
const QK: usize = 256;
/// Below this, a sub-block of Q6_K counts as all zeros (ggml's `GROUP_MAX_EPS`).
const ZERO: f32 = 1e-15;

/// Bytes of one Q4_K block: d, dmin, 12 bytes of scales, 128 of nibbles.
const Q4K_BYTES: usize = 4 + 12 + QK / 2;
/// Bytes of one Q5_K block: as Q4_K, plus 32 bytes of fifth bits.
const Q5K_BYTES: usize = 4 + 12 + QK / 8 + QK / 2;
/// Bytes of one Q6_K block: 128 bytes of low nibbles, 64 of high pairs, 16 scales, d.
const Q6K_BYTES: usize = QK / 2 + QK / 4 + QK / 16 + 2;

/// Writes one super-block's bytes from its 256 values.
type BlockFn = fn(&[f32], &mut [u8]);

/// `values` (whole super-blocks, rows back to back) as `dtype` blocks, for the three
/// K-quant types this module writes; `None` for any other type (the caller's quantizer).
pub fn quantize(values: &[f32], dtype: GgmlDType) -> Option<Vec<u8>> {
    let (bytes, block): (usize, BlockFn) = match dtype {
        GgmlDType::Q4K => (Q4K_BYTES, q4k_block),
        GgmlDType::Q5K => (Q5K_BYTES, q5k_block),
        GgmlDType::Q6K => (Q6K_BYTES, q6k_block),
        _ => return None,
    };
    assert!(
        values.len().is_multiple_of(QK),
        "{dtype:?} needs whole super-blocks of {QK} values"
    );
    let mut out = vec![0u8; values.len() / QK * bytes];
    for (x, y) in values.chunks_exact(QK).zip(out.chunks_exact_mut(bytes)) {
        block(x, y);
    }
    Some(out)
}

/// ggml's `nearest_int`: round half to even, by adding 1.5 · 2²³ so the float unit itself
/// rounds and reading the integer from the mantissa. Exact for |v| < 2²², far beyond any
/// level here; without SSE4.1 (portable builds) `f32::round_ties_even` is a libm call per
/// value, which made quantizing a 7B model minutes slower.
#[inline]
fn nearest(v: f32) -> i32 {
    let shifted = v + 12_582_912.0;
    (shifted.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// How a Q4_K / Q5_K sub-block's scale search runs.
struct Search {
    /// Highest level (15 or 31).
    levels: u8,
    /// Offset of the first inverse scale tried, in levels.
    start: f32,
    /// Number of steps of 0.1 level after the first.
    steps: u8,
}

/// One 32-value sub-block fitted as `scale · level − min`: returns `(scale, min)` and
/// leaves the levels of the best fit in `l`.
fn fit_with_min(x: &[f32], search: &Search, l: &mut [u8]) -> (f32, f32) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let spread = (sum_x2 / x.len() as f32).sqrt();
    let mut w = [0f32; 32];
    for (w, &v) in w.iter_mut().zip(x) {
        *w = spread + v.abs();
    }
    let w = &w[..x.len()];

    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
    for (&v, &wi) in x.iter().zip(w).skip(1) {
        min = min.min(v);
        max = max.max(v);
        sum_w += wi;
        sum_x += wi * v;
    }
    min = min.min(0.0);
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let top = search.levels as f32;
    let round = |iscale: f32, min: f32, l: &mut [u8]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = nearest(iscale * (v - min)).clamp(0, search.levels as i32) as u8;
        }
    };
    let error = |scale: f32, min: f32, l: &[u8]| {
        let mut e = 0f32;
        for ((&q, &v), &wi) in l.iter().zip(x).zip(w) {
            let d = scale * q as f32 + min - v;
            e += wi * (d * d);
        }
        e
    };
    let iscale = top / (max - min);
    let mut scale = 1.0 / iscale;
    round(iscale, min, l);
    let mut best = error(scale, min, l);
    let mut trial = [0u8; 32];
    let trial = &mut trial[..x.len()];
    for i in 0..=search.steps {
        round(
            (search.start + 0.1 * i as f32 + top) / (max - min),
            min,
            trial,
        );
        let (mut sl, mut sl2, mut sxl) = (0f32, 0f32, 0f32);
        for ((&q, &v), &wi) in trial.iter().zip(x).zip(w) {
            let q = q as f32;
            sl += wi * q;
            sl2 += wi * q * q;
            sxl += wi * q * v;
        }
        let det = sum_w * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut s = (sum_w * sxl - sum_x * sl) / det;
        let mut m = (sl2 * sum_x - sl * sxl) / det;
        if m > 0.0 {
            m = 0.0;
            s = sxl / sl2;
        }
        let e = error(s, m, trial);
        if e < best {
            l.copy_from_slice(trial);
            best = e;
            scale = s;
            min = m;
        }
    }
    (scale, -min)
}

/// The twelve scale bytes of a Q4_K / Q5_K block: eight 6-bit scales and eight 6-bit
/// minimums, the high two bits of sub-blocks 4-7 kept in the top bits of bytes 0-7.
fn pack_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[..4].copy_from_slice(&ls[..4]);
    s[4..8].copy_from_slice(&lm[..4]);
    for j in 4..8 {
        s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
        s[j - 4] |= (ls[j] >> 4) << 6;
        s[j] |= (lm[j] >> 4) << 6;
    }
    s
}

/// Sub-block `j`'s 6-bit scale and minimum back from the twelve bytes.
fn unpack_scale(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The shared part of Q4_K and Q5_K: fits, stores d, dmin and the scales at the start of
/// `y`, and returns every value's level against the stored numbers.
fn with_min_levels(x: &[f32], search: &Search, y: &mut [u8]) -> [u8; QK] {
    let mut l = [0u8; QK];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for (j, part) in x.chunks_exact(32).enumerate() {
        (scales[j], mins[j]) = fit_with_min(part, search, &mut l[32 * j..32 * (j + 1)]);
    }
    let max_scale = scales.iter().fold(0f32, |a, &b| if b > a { b } else { a });
    let max_min = mins.iter().fold(0f32, |a, &b| if b > a { b } else { a });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let six = |v: f32| nearest(v).clamp(0, 63) as u8;
    let ls: [u8; 8] = std::array::from_fn(|j| six(inv_scale * scales[j]));
    let lm: [u8; 8] = std::array::from_fn(|j| six(inv_min * mins[j]));
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    let packed = pack_scales(&ls, &lm);
    y[4..16].copy_from_slice(&packed);
    for (j, part) in x.chunks_exact(32).enumerate() {
        let (sc, m) = unpack_scale(j, &packed);
        let step = d.to_f32() * sc as f32;
        if step == 0.0 {
            continue;
        }
        let shift = dmin.to_f32() * m as f32;
        for (q, &v) in l[32 * j..].iter_mut().zip(part) {
            *q = nearest((v + shift) / step).clamp(0, search.levels as i32) as u8;
        }
    }
    l
}

/// One Q4_K super-block.
fn q4k_block(x: &[f32], y: &mut [u8]) {
    let search = Search {
        levels: 15,
        start: -1.0,
        steps: 20,
    };
    let l = with_min_levels(x, &search, y);
    let qs = &mut y[16..];
    for (c, out) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for (i, q) in out.iter_mut().enumerate() {
            *q = c[i] | (c[i + 32] << 4);
        }
    }
}

/// One Q5_K super-block: low nibbles as Q4_K's, fifth bits in `qh` (bit `2c` for the first
/// half of 64-value chunk `c`, bit `2c + 1` for its second half).
fn q5k_block(x: &[f32], y: &mut [u8]) {
    let search = Search {
        levels: 31,
        start: -0.5,
        steps: 15,
    };
    let l = with_min_levels(x, &search, y);
    let (qh, qs) = y[16..].split_at_mut(QK / 8);
    for (c, (chunk, out)) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)).enumerate() {
        for i in 0..32 {
            let (lo, hi) = (chunk[i], chunk[i + 32]);
            qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            out[i] = (lo & 0xF) | ((hi & 0xF) << 4);
        }
    }
}

/// The levels (0..63, i.e. −32..31 plus 32) of one 16-value sub-block at inverse scale
/// `iscale`, with the weighted sums `Σ w·x·l` and `Σ w·l²` (weights `x²`).
fn signed_levels(x: &[f32], iscale: f32, l: Option<&mut [u8]>) -> (f32, f32) {
    let (mut sxl, mut sl2) = (0f32, 0f32);
    let mut out = l;
    for (i, &v) in x.iter().enumerate() {
        let q = nearest(iscale * v).clamp(-32, 31);
        if let Some(l) = out.as_deref_mut() {
            l[i] = (q + 32) as u8;
        }
        let w = v * v;
        let q = q as f32;
        sxl += w * v * q;
        sl2 += w * q * q;
    }
    (sxl, sl2)
}

/// One 16-value sub-block fitted as `scale · (level − 32)`: the scale, levels in `l`.
fn fit_signed(x: &[f32], l: &mut [u8]) -> f32 {
    let mut peak = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            peak = v;
        }
    }
    if amax < ZERO {
        l.fill(0);
        return 0.0;
    }
    let (sxl, sl2) = signed_levels(x, -32.0 / peak, Some(l));
    let mut scale = if sl2 != 0.0 { sxl / sl2 } else { 0.0 };
    let mut best = scale * sxl;
    for i in (-9..=9).filter(|&i| i != 0) {
        let iscale = -(32.0 + 0.1 * i as f32) / peak;
        let (sxl, sl2) = signed_levels(x, iscale, None);
        if sl2 > 0.0 && sxl * sxl > best * sl2 {
            signed_levels(x, iscale, Some(l));
            scale = sxl / sl2;
            best = scale * sxl;
        }
    }
    scale
}

/// One Q6_K super-block.
fn q6k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for (j, part) in x.chunks_exact(16).enumerate() {
        scales[j] = fit_signed(part, &mut l[16 * j..16 * (j + 1)]);
        if scales[j].abs() > max_abs {
            max_abs = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_abs < ZERO {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let (ql, rest) = y.split_at_mut(QK / 2);
    let (qh, rest) = rest.split_at_mut(QK / 4);
    let (sc, dbytes) = rest.split_at_mut(QK / 16);
    dbytes.copy_from_slice(&d.to_le_bytes());
    for (j, part) in x.chunks_exact(16).enumerate() {
        let s = nearest(iscale * scales[j]).clamp(-128, 127) as i8;
        sc[j] = s as u8;
        let step = d.to_f32() * s as f32;
        if step == 0.0 {
            continue;
        }
        for (q, &v) in l[16 * j..].iter_mut().zip(part) {
            *q = (nearest(v / step).clamp(-32, 31) + 32) as u8;
        }
    }
    for (half, (ql, qh)) in ql
        .chunks_exact_mut(64)
        .zip(qh.chunks_exact_mut(32))
        .enumerate()
    {
        let c = &l[128 * half..128 * (half + 1)];
        for i in 0..32 {
            ql[i] = (c[i] & 0xF) | ((c[i + 64] & 0xF) << 4);
            ql[i + 32] = (c[i + 32] & 0xF) | ((c[i + 96] & 0xF) << 4);
            qh[i] = (c[i] >> 4)
                | ((c[i + 32] >> 4) << 2)
                | ((c[i + 64] >> 4) << 4)
                | ((c[i + 96] >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_bytes_round_trip() {
        let ls = [0, 1, 17, 63, 32, 47, 5, 60];
        let lm = [63, 2, 33, 0, 15, 16, 62, 31];
        let s = pack_scales(&ls, &lm);
        for j in 0..8 {
            assert_eq!(unpack_scale(j, &s), (ls[j], lm[j]), "sub-block {j}");
        }
    }

    #[test]
    fn rounding_ties_go_to_even_as_ggml() {
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 63.7, -32.2].map(nearest),
            [0, 2, 2, 0, -2, 2, 64, -32]
        );
        for i in -200_000..200_000 {
            let v = i as f32 * 0.000_731;
            assert_eq!(nearest(v), v.round_ties_even() as i32, "{v}");
        }
    }

    #[test]
    fn other_types_are_left_to_the_caller() {
        assert!(quantize(&[0.0; 256], GgmlDType::Q8_0).is_none());
        assert_eq!(
            quantize(&[0.0; 512], GgmlDType::Q6K).unwrap().len(),
            2 * 210
        );
    }
}
