//! A hostile model file: whatever the bytes, loading is an error or a model, never a panic
//! or an allocation beyond the file's size. The loader is reached the way `open_gguf`
//! reaches it: the guard first, then candle's parser, the tokenizer rebuilt from the
//! metadata, and the model built from the tensors.
#![no_main]

use std::io::Cursor;

use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file;
use candle_transformers::models::quantized_llama;
use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = Cursor::new(data);
    if autoj_judge::engine::gguf_guard::check(&mut file).is_err() {
        return;
    }
    let Ok(content) = gguf_file::Content::read(&mut file) else {
        return;
    };
    if let Ok(tok) = TextTokenizer::from_gguf(&content) {
        if let Ok(ids) = tok.encode("Response 1 [[5]]", true) {
            let _ = tok.decode(&ids);
        }
    }
    let _ = quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu);
});
