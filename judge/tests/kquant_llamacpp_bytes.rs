//! Our Q4_K, Q5_K and Q6_K blocks are llama-quantize's, byte for byte, on rows llama.cpp
//! quantized (fixtures/kquant, written by scripts/llamacpp_interop.py): the quantization
//! error per tensor of `autoj quantize` equals llama.cpp's own (issue 27).

use std::path::Path;

use autoj_judge::engine::checkpoint::kquant;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kquant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn blocks_equal_llama_quantize_bytes() {
    for (name, dtype) in [
        ("Q4_K", GgmlDType::Q4K),
        ("Q5_K", GgmlDType::Q5K),
        ("Q6_K", GgmlDType::Q6K),
    ] {
        let values: Vec<f32> = fixture(&format!("{name}.f32"))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let theirs = fixture(&format!("{name}.blocks"));
        assert_eq!(values.len(), 4 * 512, "{name}");
        let ours = kquant::quantize(&values, dtype).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        let differing = ours
            .chunks(dtype.type_size())
            .zip(theirs.chunks(dtype.type_size()))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{name}: {differing} of 8 blocks differ");
        // The reference tells the algorithms apart: candle's quantizer writes other bytes.
        let t = Tensor::from_slice(&values, (4, 512), &Device::Cpu).unwrap();
        let candle = QTensor::quantize(&t, dtype)
            .unwrap()
            .data()
            .unwrap()
            .into_owned();
        assert_ne!(candle, theirs, "{name}");
    }
}
