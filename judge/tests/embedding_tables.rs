//! Token embedding tables stay in their stored form: Q8_0 and Q4_1 tables are read where
//! they lie in the mapped file (a 7B table in f32 would be 800 MB), and the first step sees
//! the rows candle's dequantization gives, so the logits agree with candle's model.

mod common;

use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::testkit::{self, TinySpec};
use candle_core::quantized::GgmlDType;

#[test]
fn q8_0_and_q4_1_tables_are_read_in_place_and_match_candle() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec {
        hidden: 128,
        ..TinySpec::default()
    };
    for (i, (table, name)) in [
        (GgmlDType::Q8_0, "embed:q8_0"),
        (GgmlDType::Q4_1, "embed:q4_1"),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        let path = testkit::write_gguf_mix(&sub, &spec, |n| {
            if n == "token_embd.weight" {
                table
            } else {
                GgmlDType::Q4_1
            }
        })
        .unwrap();
        let (model, _, _) = BatchModel::load(&path, None).unwrap();
        let census = model.kernel_census();
        assert_eq!(census.get(name), Some(&1), "{census:?}");
        assert_eq!(census.get("embed:f32"), None, "{census:?}");
        let (diff, scale) = common::logits_vs_candle(&path);
        assert!(
            diff < 0.02 * scale.max(1.0),
            "{name}: logits differ by {diff} (scale {scale})"
        );
    }
}
