//! A hostile PyTorch pickle: whatever the bytes, the restricted reader returns tensor
//! records or an error, never a panic, a hang or an allocation beyond its value budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = autoj_judge::engine::checkpoint::pickle::parse(data) {
        for (_, r) in records {
            // Every accepted record lies inside its storage.
            assert!(r.offset + r.len() <= r.storage_len);
        }
    }
});
