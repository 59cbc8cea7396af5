//! Reading a checkpoint on its own thread ahead of the quantizer (`autoj quantize`, loading
//! a directory): the same tensors in the same order as reading in line, the consumer's
//! error returned as it was raised, and the reader stopped by it.

use autoj_judge::engine::checkpoint::Checkpoint;
use autoj_judge::error::JudgeError;
use autoj_judge::testkit::layouts::{write_layout, Layout};
use autoj_judge::testkit::TinySpec;
use candle_core::DType;

fn checkpoint(dir: &std::path::Path) -> Checkpoint {
    let layout = Layout::PyTorch {
        shards: 3,
        dtype: DType::F16,
    };
    let path = write_layout(dir, "m", &TinySpec::default(), layout).unwrap();
    Checkpoint::open(&path).unwrap()
}

#[test]
fn reading_ahead_yields_what_reading_in_line_does() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path());
    let mut in_line = Vec::new();
    ck.stream(|name, t| {
        in_line.push((
            name,
            t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        ));
        Ok(())
    })
    .unwrap();
    for ahead in [0, 1, 4] {
        let mut read = Vec::new();
        ck.stream_ahead(ahead, |name, t| {
            read.push((
                name,
                t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            ));
            Ok(())
        })
        .unwrap();
        assert!(in_line.len() > 10, "{} tensors", in_line.len());
        assert_eq!(read, in_line, "ahead {ahead}");
    }
}

#[test]
fn a_consumer_error_stops_the_reader_and_is_the_one_returned() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path());
    let mut seen = 0;
    let err = ck
        .stream_ahead(1, |name, _| {
            seen += 1;
            if seen == 3 {
                return Err(JudgeError::InvalidArgument(format!("refused {name}")));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(seen, 3, "the consumer ran past its error");
    assert!(err.to_string().contains("refused"), "{err}");
}
