use super::*;
use crate::engine::cpu::kernels::test_values::random;
#[cfg(target_arch = "x86_64")]
use blocks::{dot4_avx2_entry, dot4_vnni_entry, dot_avx2_entry, dot_vnni_entry};

fn quantize_q4_1(w: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in w.chunks_exact(BLOCK) {
        let min = chunk.iter().copied().fold(f32::INFINITY, f32::min);
        let max = chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(min).to_le_bytes());
        for j in 0..BLOCK / 2 {
            let lo = (((chunk[j] - min) * inv).round() as u8).min(15);
            let hi = (((chunk[j + 16] - min) * inv).round() as u8).min(15);
            out.push(lo | (hi << 4));
        }
    }
    out
}

fn quantize_q8_0(w: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for chunk in w.chunks_exact(BLOCK) {
        let d = chunk.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        bytes.extend(f16::from_f32(d).to_le_bytes());
        bytes.extend(chunk.iter().map(|v| ((v / d).round() as i8) as u8));
    }
    bytes
}

/// The weights as stored (`d * q + m`).
fn dequantize_q4_1(bytes: &[u8]) -> Vec<f32> {
    read_q4_1(bytes)
        .iter()
        .flat_map(|b| {
            let (d, mn) = (b.d.to_f32(), b.m.to_f32());
            let lo = b.qs.map(|v| d * (v & 0x0F) as f32 + mn);
            let hi = b.qs.map(|v| d * (v >> 4) as f32 + mn);
            lo.into_iter().chain(hi)
        })
        .collect()
}

/// The activations as the chosen kernels quantize them.
fn quantized_activations(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512() {
        return tiles16::quantize(x, m, k)
            .iter()
            .flat_map(|b| b.to_q8_1().qs.map(|q| b.to_q8_1().d * q as f32))
            .collect();
    }
    quantize_rows(x, m, k)
        .iter()
        .flat_map(|b| b.qs.map(|q| b.d * q as f32))
        .collect()
}

/// `y` equals the product of the stored weights and the quantized activations up to float
/// rounding.
fn assert_product(y: &[f32], w: &[f32], x: &[f32], (m, n, k): (usize, usize, usize)) {
    let xdeq = quantized_activations(x, m, k);
    for row in 0..m {
        for col in 0..n {
            let exact: f32 = (0..k).map(|i| w[col * k + i] * xdeq[row * k + i]).sum();
            let got = y[row * n + col];
            assert!(
                (got - exact).abs() < 1e-3,
                "{} ({row},{col}) {got} vs {exact}",
                kernel_name()
            );
        }
    }
}

#[test]
fn matmul_matches_f32_product_and_kernels_agree() {
    let (n, k, m) = (24, 128, 13);
    let bytes = quantize_q4_1(&random(n * k, 7));
    let x = random(m * k, 11);
    let q = Q4_1Matrix::from_bytes(&bytes, n, k).expect("valid bytes");
    assert_product(&q.matmul(&x, m), &dequantize_q4_1(&bytes), &x, (m, n, k));
    // The block kernels (whichever this CPU runs) against the portable one.
    let blocks = read_q4_1(&bytes);
    let xq = quantize_rows(&x, m, k);
    let kb = k / BLOCK;
    for col in 0..n {
        let wrow = &blocks[col * kb..(col + 1) * kb];
        let a = dot_scalar(wrow, &xq[..kb]);
        let b = dot_fn()(wrow, &xq[..kb]);
        assert!((a - b).abs() < 1e-4, "scalar {a} vs {b}");
    }
}

#[test]
fn rows_do_not_depend_on_batch() {
    let (n, k) = (16, 128);
    let q = Q4_1Matrix::from_bytes(&quantize_q4_1(&random(n * k, 3)), n, k).unwrap();
    let x = random(13 * k, 5);
    let all = q.matmul(&x, 13);
    // Row 9 runs in a pass of four (rows 8..12) in the batch, alone here; row 12 alone in
    // both; row 2 in a pass of eight.
    for row in [2, 9, 12] {
        let one = q.matmul(&x[row * k..(row + 1) * k], 1);
        assert_eq!(&all[row * n..(row + 1) * n], one.as_slice(), "row {row}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_variants_give_identical_bits() {
    let has = |f| std::arch::is_x86_feature_detected!("avx2") && f;
    if !has(
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("f16c")
    ) {
        eprintln!("skipped: this CPU has no AVX2/FMA/F16C");
        return;
    }
    let (n, k) = (4, 128);
    let blocks = read_q4_1(&quantize_q4_1(&random(n * k, 9)));
    let xq = quantize_rows(&random(4 * k, 13), 4, k);
    let kb = k / BLOCK;
    let rows = [
        &xq[..kb],
        &xq[kb..2 * kb],
        &xq[2 * kb..3 * kb],
        &xq[3 * kb..],
    ];
    let w = &blocks[..kb];
    let four = dot4_avx2_entry(w, rows);
    for (j, x) in rows.iter().enumerate() {
        assert_eq!(dot_avx2_entry(w, x).to_bits(), four[j].to_bits());
    }
    if std::arch::is_x86_feature_detected!("avxvnni") {
        assert_eq!(dot4_vnni_entry(w, rows), four);
        assert_eq!(dot_vnni_entry(w, rows[1]).to_bits(), four[1].to_bits());
    } else {
        eprintln!("AVX-VNNI variant not checked: this CPU lacks it");
    }
}

#[test]
fn q8_0_matmul_matches_its_dequantized_weights() {
    let (n, k, m) = (12, 64, 6);
    let bytes = quantize_q8_0(&random(n * k, 21));
    let q = Q8_0Matrix::from_bytes(&bytes, n, k).expect("valid bytes");
    let x = random(m * k, 23);
    let deq: Vec<f32> = read_q8_0(&bytes)
        .iter()
        .flat_map(|b| b.qs.map(|v| b.d.to_f32() * v as f32))
        .collect();
    let y = q.matmul(&x, m);
    assert_product(&y, &deq, &x, (m, n, k));
    let one = q.matmul(&x[k..2 * k], 1);
    assert_eq!(
        &y[n..2 * n],
        one.as_slice(),
        "rows must not depend on the batch"
    );
}

#[test]
fn rejects_wrong_sizes() {
    assert!(Q4_1Matrix::from_bytes(&[0; 20], 1, 33).is_none());
    assert!(Q4_1Matrix::from_bytes(&[0; 19], 1, 32).is_none());
}

#[test]
fn swiglu_product_is_silu_of_gate_times_up() {
    // 12 rows stay in GGUF blocks; 16 and 32 are interleaved sixteen rows at a time where the
    // AVX-512 kernels run (gate and up rows then share tiles).
    let k = 128;
    for n in [12, 16, 32] {
        let m = 9;
        let gate_bytes = quantize_q4_1(&random(n * k, 29));
        let up_bytes = quantize_q4_1(&random(n * k, 31));
        let gate = Q4_1Matrix::from_bytes(&gate_bytes, n, k).unwrap();
        let up = Q4_1Matrix::from_bytes(&up_bytes, n, k).unwrap();
        let x = random(m * k, 37);
        let (g, u) = (gate.matmul(&x, m), up.matmul(&x, m));
        let fused = Q4_1Matrix::swiglu_pair(gate, up).expect("same shapes");
        let h = fused.matmul_swiglu(&x, m);
        assert_eq!(h.len(), m * n);
        // The separate products through the same activation function give the same bits.
        let mut same = vec![0f32; m * n];
        swiglu(&g, &u, &mut same);
        assert_eq!(h, same, "n={n}");
        for (i, got) in h.iter().enumerate() {
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            let tol = 1e-6 * (want.abs() + (g[i] * u[i]).abs()) + 1e-12;
            assert!((got - want).abs() <= tol, "n={n} cell {i}: {got} vs {want}");
        }
    }
    // Row counts that are not a multiple of four stay separate.
    let odd = |seed| Q4_1Matrix::from_bytes(&quantize_q4_1(&random(6 * k, seed)), 6, k).unwrap();
    assert!(Q4_1Matrix::swiglu_pair(odd(1), odd(2)).is_err());
}

#[test]
fn rows_of_long_inputs_do_not_depend_on_the_batch() {
    // 70 rows (a prefill chunk): five row tiles, the last one partial.
    let (n, k, m) = (16, 128, 70);
    let q4 = Q4_1Matrix::from_bytes(&quantize_q4_1(&random(n * k, 41)), n, k).unwrap();
    let q8 = Q8_0Matrix::from_bytes(&quantize_q8_0(&random(n * k, 43)), n, k).unwrap();
    let x = random(m * k, 47);
    let (all4, all8) = (q4.matmul(&x, m), q8.matmul(&x, m));
    for row in [0, 37, 63, 64, 69] {
        let xr = &x[row * k..(row + 1) * k];
        assert_eq!(
            &all4[row * n..(row + 1) * n],
            q4.matmul(xr, 1).as_slice(),
            "q4_1 row {row}"
        );
        assert_eq!(
            &all8[row * n..(row + 1) * n],
            q8.matmul(xr, 1).as_slice(),
            "q8_0 row {row}"
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn sixteen_row_tiles_match_the_portable_kernels() {
    if !tiles16::available() {
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        return;
    }
    // 6 and 40 blocks per row; 13 rows = a pass of eight, one of four and one alone.
    for (n, k, m) in [(32, 192, 13), (16, 1280, 9)] {
        let kb = k / BLOCK;
        let xq = tiles16::quantize(&random(m * k, 17), m, k);
        let q8_1: Vec<BlockQ8_1> = xq.iter().map(|b| b.to_q8_1()).collect();
        let b4 = read_q4_1(&quantize_q4_1(&random(n * k, 19)));
        let b8 = read_q8_0(&quantize_q8_0(&random(n * k, 23)));
        let t4 = tiles16::Q4_1Tiles::from_fn(n, kb, |r, b| b4[r * kb + b]).expect("n % 16 == 0");
        let t8 = tiles16::Q8_0Tiles::new(&b8, n, kb).expect("n % 16 == 0");
        for g in 0..n / tiles16::ROWS {
            let mut y4 = vec![0f32; m * tiles16::ROWS];
            let mut y8 = vec![0f32; m * tiles16::ROWS];
            t4.group_rows(g, &xq, 0..m, &mut y4);
            t8.group_rows(g, &xq, 0..m, &mut y8);
            for row in 0..m {
                let x = &q8_1[row * kb..(row + 1) * kb];
                for i in 0..tiles16::ROWS {
                    let col = g * tiles16::ROWS + i;
                    let w4 = &b4[col * kb..(col + 1) * kb];
                    let w8 = &b8[col * kb..(col + 1) * kb];
                    let (e4, e8) = (dot_scalar(w4, x), q8_dot_scalar(w8, x));
                    let (g4, g8) = (y4[row * tiles16::ROWS + i], y8[row * tiles16::ROWS + i]);
                    let tol = 1e-3 * (1.0 + e4.abs().max(e8.abs()));
                    assert!(
                        (g4 - e4).abs() < tol,
                        "q4_1 k={k} ({row},{col}) {g4} vs {e4}"
                    );
                    assert!(
                        (g8 - e8).abs() < tol,
                        "q8_0 k={k} ({row},{col}) {g8} vs {e8}"
                    );
                }
                // Alone, a row gives the same bits as in its pass of eight or four.
                let mut alone = [0f32; tiles16::ROWS];
                let here = row * tiles16::ROWS..(row + 1) * tiles16::ROWS;
                t4.group_rows(g, &xq, row..row + 1, &mut alone);
                assert_eq!(
                    alone.map(f32::to_bits),
                    y4[here.clone()]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                        .as_slice()
                );
                t8.group_rows(g, &xq, row..row + 1, &mut alone);
                assert_eq!(
                    alone.map(f32::to_bits),
                    y8[here]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                        .as_slice()
                );
            }
        }
        // The interleaved matrix gives its blocks back unchanged.
        for r in 0..n {
            for b in 0..kb {
                let (got, want) = (t4.block(r, b), b4[r * kb + b]);
                assert_eq!(
                    (got.d, got.m, got.qs),
                    (want.d, want.m, want.qs),
                    "block ({r},{b})"
                );
            }
        }
    }
}
