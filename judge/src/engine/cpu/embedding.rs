//! The token embedding table in the form it is stored: rows looked up where they lie and
//! dequantized one token at a time, so a 7B model's 100-800 MB table is never expanded.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use super::kernels::{KQuant, Stored};
use crate::error::{JudgeError, Result};

/// The token embedding table, kept in its stored form when rows can be read from it.
pub enum Embedding {
    /// Rows of Q8_0 or Q4_1 blocks (the default model's table is Q8_0), read where they lie
    /// in the mapped file and dequantized as tokens are looked up: 4-6x smaller than f32,
    /// and only the rows used are ever resident.
    Blocks {
        /// The table's bytes.
        bytes: Stored,
        /// Q8_0 or Q4_1.
        dtype: GgmlDType,
        /// Values per row.
        dim: usize,
    },
    /// K-quant rows, dequantized as they are looked up (over the mapped file's bytes).
    K(KQuant),
    /// Anything else, expanded to f32.
    F32 {
        /// Row-major values.
        table: Vec<f32>,
        /// Values per row.
        dim: usize,
    },
}

impl Embedding {
    /// Whether rows of `dtype` blocks can be looked up in place ([`Embedding::Blocks`]).
    pub fn reads_blocks(dtype: GgmlDType, dim: usize) -> bool {
        matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_1) && dim.is_multiple_of(32)
    }

    /// The table read into memory (for files whose bytes are not mapped).
    pub fn from_qtensor(t: &QTensor) -> Result<Self> {
        let (_, dim) = t.shape().dims2()?;
        if Self::reads_blocks(t.dtype(), dim) {
            return Ok(Self::Blocks {
                bytes: Stored::Owned(t.data()?.into_owned().into()),
                dtype: t.dtype(),
                dim,
            });
        }
        let table = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::F32 { table, dim })
    }

    /// Token `id`'s row, written to `out`.
    pub fn row(&self, id: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Self::Blocks { bytes, dtype, dim } => {
                let size = dtype.type_size();
                let row_bytes = dim / 32 * size;
                let row = bytes
                    .get(id * row_bytes..(id + 1) * row_bytes)
                    .ok_or_else(|| token_err(id))?;
                let half = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (block, dst) in row.chunks_exact(size).zip(out.chunks_exact_mut(32)) {
                    if *dtype == GgmlDType::Q8_0 {
                        // d, then 32 signed bytes.
                        let d = half(block);
                        for (o, &q) in dst.iter_mut().zip(&block[2..]) {
                            *o = d * f32::from(q as i8);
                        }
                    } else {
                        // d, m, then 16 bytes: value j in the low nibble of byte j, value
                        // j + 16 in its high nibble; value = d·q + m.
                        let (d, m) = (half(block), half(&block[2..]));
                        let (lo, hi) = dst.split_at_mut(16);
                        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&block[4..]) {
                            *l = d * f32::from(q & 0x0F) + m;
                            *h = d * f32::from(q >> 4) + m;
                        }
                    }
                }
            }
            Self::K(m) => m.row(id, out).ok_or_else(|| token_err(id))?,
            Self::F32 { table, dim } => out.copy_from_slice(
                table
                    .get(id * dim..(id + 1) * dim)
                    .ok_or_else(|| token_err(id))?,
            ),
        }
        Ok(())
    }
}

/// The error for a token id past the table: the embedding is where an id is first looked
/// up, and the forward pass reports the same error for ids it refuses earlier.
pub(super) fn token_err(id: usize) -> JudgeError {
    JudgeError::InvalidArgument(format!("token id {id} is outside the vocabulary"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn block_rows_equal_candles_dequantization() {
        let (vocab, dim) = (7, 96);
        let values: Vec<f32> = (0..vocab * dim)
            .map(|i| ((i * 7919 % 1009) as f32 / 504.5 - 1.0) * 3.0)
            .collect();
        let t = Tensor::from_vec(values, (vocab, dim), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = QTensor::quantize(&t, dtype).unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let table = Embedding::from_qtensor(&q).unwrap();
            assert!(
                matches!(table, Embedding::Blocks { .. }),
                "{dtype:?} kept as blocks"
            );
            for (id, row) in want.iter().enumerate() {
                let mut got = vec![0f32; dim];
                table.row(id, &mut got).unwrap();
                assert_eq!(&got, row, "{dtype:?} row {id}");
            }
            let mut past = vec![0f32; dim];
            assert!(
                table.row(vocab, &mut past).is_err(),
                "a token past the table is refused"
            );
        }
    }
}
