//! Attention blocks against single rows and the portable loop: a head's result must not
//! depend on what else its block holds (bit for bit), and must match plain attention.

use half::f16;

use super::attention::{attend_block, attend_body, attend_packed, Geometry};
use super::attention_inputs::{HeadKv, KvValue, QueryBlock, MAX_BLOCK_HEADS};
use super::kernels::test_values;
use super::kv::{Run, Runs, SeqKv};
use crate::engine::scheduler::KvType;

/// A block kernel under test.
type Kernel<T> = fn(&QueryBlock<'_>, &HeadKv<'_, T>, &mut [f32]);

/// Values in [-2, 2): wider than the shared helper's, for sharper softmaxes.
fn random(n: usize, seed: u32) -> Vec<f32> {
    test_values::random(n, seed)
        .into_iter()
        .map(|x| 2.0 * x)
        .collect()
}

/// Stores cache rows (whole positions) as `T`.
type Store<T> = fn(&[f32]) -> Vec<T>;

fn as_f32(x: &[f32]) -> Vec<f32> {
    x.to_vec()
}

fn as_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// 8-bit blocks as the cache stores them (through a real cache's append).
fn as_q8(x: &[f32]) -> Vec<i8> {
    let mut kv = SeqKv::new(1, x.len(), KvType::Q8);
    kv.append(0, x, x);
    match kv.runs(0) {
        Runs::Q8(runs) => runs[0].0.to_vec(),
        _ => panic!("a q8 cache gave other runs"),
    }
}

/// Runs `kernel` on blocks of every row count its shapes allow and checks each row against
/// the same kernel on that row alone (bit-identical) and each head against the portable
/// loop, on caches of type `T` split in two runs (a shared prefix and the sequence's own).
fn check<T: KvValue>(kernel: Kernel<T>, store: Store<T>, max_heads: usize) {
    let positions = 53;
    for (group, d, kvh) in [
        (3, 64, 3),
        (1, 64, 2),
        (4, 64, 1),
        (2, 128, 2),
        (1, 128, 1),
        (8, 128, 1),
    ] {
        let width = kvh * T::stored_len(d);
        let k = store(&random(positions * kvh * d, 3 + d as u32));
        let v = store(&random(positions * kvh * d, 5 + group as u32));
        let runs: Vec<Run<'_, T>> = vec![
            (&k[..20 * width], &v[..20 * width], 20),
            (&k[20 * width..], &v[20 * width..], 33),
        ];
        let head = HeadKv {
            runs: &runs,
            offset: (kvh - 1) * T::stored_len(d),
            stride: width,
        };
        for rows in 1..=(max_heads / group).max(1) {
            let q = random(rows * group * d, 7 + rows as u32);
            let fits = |first_len: &usize| first_len + rows - 1 <= positions;
            for first_len in [1, 15, 16, 17, 40, positions + 1 - rows]
                .into_iter()
                .filter(fits)
            {
                let block = QueryBlock {
                    q: &q,
                    group,
                    first_len,
                    head_dim: d,
                    scale: 0.125,
                };
                let mut got = vec![f32::NAN; q.len()];
                kernel(&block, &head, &mut got);
                let what = format!("group {group} d {d} rows {rows} first_len {first_len}");
                for r in 0..rows {
                    let span = r * group * d..(r + 1) * group * d;
                    let alone = QueryBlock {
                        q: &q[span.clone()],
                        first_len: first_len + r,
                        ..block
                    };
                    let mut want = vec![f32::NAN; group * d];
                    kernel(&alone, &head, &mut want);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got[span.clone()]),
                        bits(&want),
                        "{what}: row {r} alone"
                    );
                    for g in 0..group {
                        let at = span.start + g * d;
                        let mut plain = vec![0f32; d];
                        attend_body(&q[at..at + d], &head, first_len + r, 0.125, &mut plain);
                        for (a, b) in got[at..at + d].iter().zip(&plain) {
                            assert!((a - b).abs() < 1e-5, "{what} row {r} head {g}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_blocks_match_single_rows_and_the_portable_loop() {
    if !super::attention_avx512::supports(1, 64) {
        eprintln!("skipped: this CPU has no AVX-512 (or AUTOJ_Q4_1_KERNEL asks for AVX2)");
        return;
    }
    let max = MAX_BLOCK_HEADS;
    check::<f32>(super::attention_avx512::attend_block::<f32>, as_f32, max);
    check::<f16>(super::attention_avx512::attend_block::<f16>, as_f16, max);
    check::<i8>(super::attention_avx512::attend_block::<i8>, as_q8, max);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_blocks_match_single_rows_and_the_portable_loop() {
    if !super::attention_avx2::supports(1, 64) {
        eprintln!("skipped: this CPU has no AVX2, FMA and F16C");
        return;
    }
    let max = super::attention_avx2::BLOCK_HEADS;
    check::<f32>(super::attention_avx2::attend_block::<f32>, as_f32, max);
    check::<f16>(super::attention_avx2::attend_block::<f16>, as_f16, max);
    check::<i8>(super::attention_avx2::attend_block::<i8>, as_q8, max);
}

#[test]
fn blocks_of_other_head_sizes_run_head_by_head() {
    // 32 values per head: no SIMD block kernel takes it, every CPU runs the per-head loop.
    check::<f32>(attend_block::<f32>, as_f32, MAX_BLOCK_HEADS);
    check::<i8>(attend_block::<i8>, as_q8, MAX_BLOCK_HEADS);
    let (d, positions) = (32, 9);
    let k = random(positions * d, 1);
    let v = random(positions * d, 2);
    let runs: Vec<Run<'_, f32>> = vec![(&k, &v, positions)];
    let head = HeadKv {
        runs: &runs,
        offset: 0,
        stride: d,
    };
    let q = random(2 * d, 3);
    let block = QueryBlock {
        q: &q,
        group: 1,
        first_len: 4,
        head_dim: d,
        scale: 0.25,
    };
    let mut got = vec![f32::NAN; 2 * d];
    attend_block(&block, &head, &mut got);
    for (h, len) in [(0, 4), (1, 5)] {
        let mut want = vec![0f32; d];
        attend_body(&q[h * d..(h + 1) * d], &head, len, 0.25, &mut want);
        assert_eq!(&got[h * d..(h + 1) * d], &want[..], "head {h}");
    }
}

#[test]
fn packed_rows_are_independent_of_their_neighbours() {
    // Two sequences (heads 6, kv heads 2: groups of 3, blocks of two rows): one prefilling
    // five rows from position 3, one decoding at position 7. Each row must equal the same row
    // attended alone, bit for bit, and land in its own place in the output.
    let geo = Geometry {
        heads: 6,
        kv_heads: 2,
        head_dim: 64,
    };
    let width = geo.kv_heads * geo.head_dim;
    let q_width = geo.heads * geo.head_dim;
    let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
        .map(|s| (random(8 * width, 10 + s), random(8 * width, 20 + s)))
        .collect();
    let runs: Vec<Vec<Run<'_, f32>>> = caches
        .iter()
        .map(|(k, v)| vec![(&k[..], &v[..], 8)])
        .collect();
    let run_refs: Vec<&[Run<'_, f32>]> = runs.iter().map(Vec::as_slice).collect();
    let rows: Vec<(usize, usize)> = (3..8).map(|p| (0, p)).chain([(1, 7)]).collect();
    let q = random(rows.len() * q_width, 99);
    let all = attend_packed(geo, &run_refs, &rows, &q);
    for (r, &row) in rows.iter().enumerate() {
        let alone = attend_packed(geo, &run_refs, &[row], &q[r * q_width..(r + 1) * q_width]);
        assert_eq!(
            &all[r * q_width..(r + 1) * q_width],
            &alone[..],
            "row {r} ({row:?})"
        );
    }
    // And the rows differ from each other (the scatter put each in its own place).
    assert_ne!(&all[..q_width], &all[q_width..2 * q_width]);
}

#[test]
fn q8_caches_stay_close_to_full_precision() {
    // One head of 128 values over 40 positions: attention through 8-bit keys and values
    // against the same cache in f32.
    let (d, positions) = (128, 40);
    let (k, v) = (random(positions * d, 61), random(positions * d, 67));
    let (kq, vq) = (as_q8(&k), as_q8(&v));
    assert_eq!(kq.len(), positions * d / 32 * 36, "36 bytes per 32 values");
    let full: Vec<Run<'_, f32>> = vec![(&k, &v, positions)];
    let bytes: Vec<Run<'_, i8>> = vec![(&kq, &vq, positions)];
    let q = random(d, 71);
    let block = QueryBlock {
        q: &q,
        group: 1,
        first_len: positions,
        head_dim: d,
        scale: 0.1,
    };
    let (mut want, mut got) = (vec![0f32; d], vec![0f32; d]);
    attend_block(
        &block,
        &HeadKv {
            runs: &full,
            offset: 0,
            stride: d,
        },
        &mut want,
    );
    attend_block(
        &block,
        &HeadKv {
            runs: &bytes,
            offset: 0,
            stride: d / 32 * 36,
        },
        &mut got,
    );
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 2e-2, "q8 attention differs from f32 by {worst}");
    assert!(worst > 0.0, "8-bit values cannot be exact on random data");
}
