//! Query language detection for routing (Chinese queries can go to a bilingual judge).
//!
//! Auto-J has English and Chinese templates only, so the decision is binary. The router
//! decides once and writes the result into the forwarded `options.language`, so the judge
//! uses the template of the pool it was routed to even if its own detector would differ.

use autoj_proto::v1::Language;
use serde::{Deserialize, Serialize};

/// A template language the router routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English templates.
    En,
    /// Chinese templates.
    Zh,
}

impl Lang {
    /// The wire enum value.
    pub fn to_proto(self) -> Language {
        match self {
            Self::En => Language::En,
            Self::Zh => Language::Zh,
        }
    }

    /// The language a request asked for, detected from `query` when it said AUTO.
    pub fn resolve(requested: Language, query: &str) -> Self {
        match requested {
            Language::En => Self::En,
            Language::Zh => Self::Zh,
            Language::Auto => detect_language(query),
        }
    }
}

/// Decides whether `text` is Chinese: at least half of its "units" are Han characters, where
/// a unit is one Han character or one run of other letters (a Latin word). Counting a word as
/// one unit keeps a Chinese question that quotes `borrow checker` Chinese, which a per-letter
/// count would not.
pub fn detect_language(text: &str) -> Lang {
    let (mut han, mut words) = (0usize, 0usize);
    let mut in_word = false;
    for c in text.chars() {
        if is_han(c) {
            han += 1;
            in_word = false;
        } else if c.is_alphabetic() {
            if !in_word {
                words += 1;
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    if han > 0 && han >= words {
        Lang::Zh
    } else {
        Lang::En
    }
}

/// CJK unified ideographs (the main block, extension A, extension B and the compatibility
/// block), the characters Chinese text is written in.
fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0xF900..=0xFAFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_chinese_and_english() {
        assert_eq!(detect_language("请写一首关于秋天的诗"), Lang::Zh);
        assert_eq!(
            detect_language("请解释 Rust 中的 borrow checker 是什么"),
            Lang::Zh
        );
        assert_eq!(detect_language("Write a poem about autumn."), Lang::En);
        assert_eq!(detect_language("What does 你好 mean in English?"), Lang::En);
        assert_eq!(detect_language("1234 !!"), Lang::En);
    }

    #[test]
    fn explicit_language_wins() {
        assert_eq!(Lang::resolve(Language::En, "请写一首诗"), Lang::En);
        assert_eq!(Lang::resolve(Language::Auto, "请写一首诗"), Lang::Zh);
    }
}
