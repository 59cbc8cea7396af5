//! The pieces of one generation: sampling settings, incremental detokenising that never
//! splits a UTF-8 character, and stop strings that are never emitted.

use crate::engine::tokenizer::TextTokenizer;
use crate::error::Result;

/// Auto-J's default generation length.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1024;

/// Sampling and length settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// 0 means greedy (Auto-J's setting).
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 disables the cut.
    pub top_p: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Extra stop strings.
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// The greedy choice, picked exactly as candle's `argmax` picks it (the first of equal
/// maxima; a NaN never wins unless it comes first), straight from the logits: candle's
/// sampler copies them into a tensor and back and compares one value at a time, which the
/// batched engine's single thread did for every sequence of every step. The maximum is
/// found sixteen lanes at a time, then its first position.
pub fn argmax(logits: &[f32]) -> u32 {
    const LANES: usize = 16;
    match logits.first() {
        None => return 0,
        Some(x) if x.is_nan() => return 0,
        Some(_) => {}
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    logits.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// Turns generated ids into text a piece at a time. It decodes a short window of recent ids
/// and only releases text once it no longer ends in a partial character (U+FFFD), so a
/// multi-byte character split across tokens is emitted whole.
#[derive(Debug, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// Adds one id; returns new text when some is complete.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let now = tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let text = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(text))
        } else {
            Ok(None)
        }
    }

    /// Whatever is still held back at the end (possibly a lone replacement character).
    pub fn finish(&mut self, tok: &TextTokenizer) -> Result<String> {
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let now = tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.strip_prefix(before.as_str()).unwrap_or("").to_string())
    }
}

/// Watches the text for stop strings. Text that could be the start of a stop string is held
/// back until it is known not to be, so a stop string never reaches the client.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    hold: usize,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let hold = stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Self {
            stops,
            text: String::new(),
            emitted: 0,
            hold,
        }
    }

    /// Appends text. Returns the text now safe to emit and whether a stop string appeared.
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        let search_from = self.emitted;
        self.text.push_str(delta);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            let out = self.text[self.emitted..at].to_string();
            self.text.truncate(at);
            self.emitted = at;
            return (out, true);
        }
        let mut safe = self.text.len().saturating_sub(self.hold).max(self.emitted);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// Releases the held-back tail at the end of generation.
    pub fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// All text accepted so far (without any stop string).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_split_across_pushes_is_never_emitted() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        let mut out = String::new();
        for piece in ["hello S", "TO", "P and more"] {
            let (t, stopped) = m.push(piece);
            out.push_str(&t);
            if stopped {
                break;
            }
        }
        assert_eq!(out, "hello ");
        assert_eq!(m.text(), "hello ");
    }

    #[test]
    fn held_text_is_flushed_at_the_end() {
        let mut m = StopMatcher::new(&["###".to_string()]);
        let (a, s1) = m.push("ab#");
        let (b, s2) = m.push("c");
        assert!(!s1 && !s2);
        let all = format!("{a}{b}{}", m.finish());
        assert_eq!(all, "ab#c");
    }

    #[test]
    fn hold_respects_char_boundaries() {
        let mut m = StopMatcher::new(&["结束了".to_string()]);
        let (a, _) = m.push("你好世界");
        assert!(a.chars().all(|c| "你好世界".contains(c)));
        let all = format!("{a}{}", m.finish());
        assert_eq!(all, "你好世界");
    }
}
