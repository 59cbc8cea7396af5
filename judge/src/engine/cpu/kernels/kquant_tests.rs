//! The K-quant matrices against candle's quantizer and dequantizer: the same values, the
//! same products, the same result for a row whatever batch it runs in.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::kquant::{BlockQ4K, BlockQ5K, BlockQ6K, KMatrix, SuperBlock};
use super::*;
use crate::engine::cpu::kernels::test_values::random;

const TYPES: [GgmlDType; 3] = [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

/// `n × k` random weights quantized by candle: the stored bytes and candle's dequantization.
fn candle_weights(dtype: GgmlDType, n: usize, k: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
    let w = Tensor::from_vec(random(n * k, seed), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let deq = q.dequantize(&Device::Cpu).unwrap();
    let values = deq.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (q.data().unwrap().into_owned(), values)
}

fn matrix(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize) -> KQuant {
    KQuant::new(dtype, Stored::Owned(bytes.into()), n, k).expect("valid K-quant bytes")
}

#[test]
fn rows_dequantize_as_candle_does() {
    let (n, k) = (6, 512);
    for dtype in TYPES {
        let (bytes, expected) = candle_weights(dtype, n, k, 21);
        let m = matrix(dtype, &bytes, n, k);
        let mut row = vec![0f32; k];
        for r in 0..n {
            m.row(r, &mut row).unwrap();
            for (i, (a, b)) in row.iter().zip(&expected[r * k..(r + 1) * k]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{dtype:?} [{r},{i}] {a} vs {b}"
                );
            }
        }
        assert!(
            m.row(n, &mut row).is_none(),
            "a row past the end is refused"
        );
    }
}

/// The exact product of candle's dequantized weights with the activations as quantized.
fn reference(w: &[f32], x: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let xq: Vec<f32> = quantize_q8k(x, m, k)
        .iter()
        .flat_map(|b| b.values())
        .collect();
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            y[r * n + c] = (0..k)
                .map(|i| w[c * k + i] as f64 * xq[r * k + i] as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

#[test]
fn products_match_candle_dequantized_weights() {
    let (n, k, m) = (10, 768, 7);
    let x = random(m * k, 5);
    for dtype in TYPES {
        let (bytes, w) = candle_weights(dtype, n, k, 33);
        let y = matrix(dtype, &bytes, n, k).matmul(&x, m);
        for (i, (got, want)) in y.iter().zip(reference(&w, &x, (m, n, k))).enumerate() {
            assert!(
                (got - want).abs() < 1e-3 * want.abs().max(1.0),
                "{dtype:?} #{i}: {got} vs {want}"
            );
        }
    }
}

/// One weight row against four activation rows through the portable and (where the CPU
/// has it) the AVX2 kernels: the same integers, so the results agree to float rounding.
fn kernels_agree<B: SuperBlock>(bytes: &[u8], k: usize) {
    let w: &[B] = bytemuck::cast_slice(&bytes[..k / QK_K * std::mem::size_of::<B>()]);
    let x = quantize_q8k(&random(4 * k, 9), 4, k);
    let kb = k / QK_K;
    let rows = [&x[..kb], &x[kb..2 * kb], &x[2 * kb..3 * kb], &x[3 * kb..]];
    let portable = B::dot_portable(w, rows);
    let single: Vec<f32> = rows.iter().map(|r| B::dot_portable(w, [*r])[0]).collect();
    assert_eq!(
        portable.as_slice(),
        single.as_slice(),
        "{}: portable batch",
        B::NAME
    );
    #[cfg(target_arch = "x86_64")]
    if uses_simd() {
        // SAFETY: `uses_simd` found AVX2, FMA and F16C.
        let simd = unsafe { B::dot_avx2(w, rows) };
        for (a, b) in portable.iter().zip(simd) {
            assert!(
                (a - b).abs() < 1e-4 * a.abs().max(1.0),
                "{}: {a} vs {b}",
                B::NAME
            );
        }
        // SAFETY: as above.
        let one = unsafe { B::dot_avx2(w, [rows[2]]) };
        assert_eq!(
            one[0].to_bits(),
            simd[2].to_bits(),
            "{}: avx2 batch",
            B::NAME
        );
        // Eight rows per pass (prefill): each row still gets the bits it gets alone.
        let eight: [&[BlockQ8K]; 8] = std::array::from_fn(|i| rows[(i * 3) % 4]);
        // SAFETY: as above.
        let wide8 = unsafe { B::dot_avx2(w, eight) };
        for (i, v) in wide8.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                simd[(i * 3) % 4].to_bits(),
                "{}: avx2 pass of eight, row {i}",
                B::NAME
            );
        }
    } else {
        eprintln!("AVX2 kernels not compared: this CPU has no AVX2/FMA/F16C");
    }
    #[cfg(target_arch = "x86_64")]
    if super::tiles16::available() && uses_simd() {
        // SAFETY: the CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
        let wide = unsafe { B::dot_avx512(w, rows) };
        for (a, b) in portable.iter().zip(wide) {
            assert!(
                (a - b).abs() < 1e-4 * a.abs().max(1.0),
                "{} avx512: {a} vs {b}",
                B::NAME
            );
        }
        // SAFETY: as above.
        let one = unsafe { B::dot_avx512(w, [rows[1]]) };
        assert_eq!(
            one[0].to_bits(),
            wide[1].to_bits(),
            "{}: avx512 batch",
            B::NAME
        );
    } else {
        eprintln!("AVX-512 VNNI kernels not compared: this CPU lacks them");
    }
}

#[test]
fn portable_and_simd_kernels_agree() {
    let k = 1024;
    kernels_agree::<BlockQ4K>(&candle_weights(GgmlDType::Q4K, 1, k, 2).0, k);
    kernels_agree::<BlockQ5K>(&candle_weights(GgmlDType::Q5K, 1, k, 3).0, k);
    kernels_agree::<BlockQ6K>(&candle_weights(GgmlDType::Q6K, 1, k, 4).0, k);
}

#[test]
fn a_row_does_not_depend_on_its_batch() {
    let (n, k, m) = (9, 512, 13);
    let x = random(m * k, 17);
    for dtype in TYPES {
        let q = matrix(dtype, &candle_weights(dtype, n, k, 8).0, n, k);
        let all = q.matmul(&x, m);
        for row in [0, 5, 12] {
            let one = q.matmul(&x[row * k..(row + 1) * k], 1);
            assert_eq!(
                &all[row * n..(row + 1) * n],
                one.as_slice(),
                "{dtype:?} row {row}"
            );
        }
    }
}

#[test]
fn wrong_shapes_are_refused() {
    let (bytes, _) = candle_weights(GgmlDType::Q4K, 2, 256, 1);
    assert!(KQuant::new(GgmlDType::Q4K, Stored::Owned(bytes.clone().into()), 2, 256).is_some());
    assert!(KQuant::new(GgmlDType::Q4K, Stored::Owned(bytes.clone().into()), 3, 256).is_none());
    assert!(KQuant::new(GgmlDType::Q6K, Stored::Owned(bytes.clone().into()), 2, 256).is_none());
    assert!(KQuant::new(GgmlDType::Q4_0, Stored::Owned(bytes.into()), 2, 256).is_none());
    let _ = KMatrix::<BlockQ4K>::new(Stored::Owned(vec![0u8; 144].into()), 1, 128)
        .map(|_| panic!("k must be a multiple of 256"));
}

#[test]
fn activations_round_halves_away_from_zero_on_every_path() {
    // A block whose largest magnitude is 127 has scale 1, so these land exactly on halves
    // (and just below them) after scaling.
    let edges = [
        127.0,
        -127.0,
        2.5,
        -2.5,
        0.5,
        -0.5,
        1.5,
        -1.5,
        0.49999997,
        -0.49999997,
        126.5,
        -126.5,
        3.4999998,
        -3.4999998,
        0.0,
        -0.0,
    ];
    let mut first: Vec<f32> = random(QK_K, 3).iter().map(|v| v * 126.0).collect();
    first[..edges.len()].copy_from_slice(&edges);
    let second: Vec<f32> = random(QK_K, 4).iter().map(|v| v * 3.7).collect();
    let zeros = vec![0f32; QK_K];
    // A blown-up activation row: the factor is infinite and every value quantizes to 0.
    let mut broken = second.clone();
    broken[5] = f32::INFINITY;
    broken[9] = f32::NAN;
    for x in [&first, &second, &zeros, &broken] {
        let block = BlockQ8K::quantize(x[..].try_into().unwrap());
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(block.d, amax / 127.0);
        let inv = if block.d > 0.0 { 1.0 / block.d } else { 0.0 };
        let want: Vec<i8> = x.iter().map(|v| (v * inv).round() as i8).collect();
        assert_eq!(block.qs.to_vec(), want);
        for (s, group) in block.bsums.iter().zip(want.chunks_exact(16)) {
            assert_eq!(*s, group.iter().map(|&q| q as i16).sum::<i16>());
        }
    }
    assert_eq!(
        &BlockQ8K::quantize(first[..].try_into().unwrap()).qs[2..6],
        &[3, -3, 1, -1]
    );
    // Many rows go through the pool in pieces: each block as when quantized alone.
    let (m, k) = (160, 2 * QK_K);
    let x = random(m * k, 8);
    let together = quantize_q8k(&x, m, k);
    assert_eq!(together.len(), m * k / QK_K);
    for (b, chunk) in together.iter().zip(x.chunks_exact(QK_K)) {
        let alone = BlockQ8K::quantize(chunk.try_into().unwrap());
        assert_eq!((b.d, b.qs, b.bsums), (alone.d, alone.qs, alone.bsums));
    }
}
