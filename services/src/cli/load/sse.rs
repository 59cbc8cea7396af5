//! Reading a Server-Sent Events body as it arrives: bytes in, whole events out.
//!
//! Only what the HTTP door sends is needed (an `event:` name and one `data:` line per event,
//! comment lines as keep-alives), but the parser follows the format's rules for the rest:
//! lines end in `\n`, `\r\n` or `\r`; a blank line dispatches the event; `data:` lines are
//! joined with `\n`; one space after the colon is dropped; an event without `data:` is not
//! dispatched; an unfinished event when the body ends is discarded.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name (`message` when the event had none).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental parser: feed it chunks with [`SseParser::push`] as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// Whether the last byte seen was `\r` (so a following `\n` belongs to the same ending).
    after_cr: bool,
    /// The name of the event being read.
    name: Option<String>,
    /// Its data lines so far, or `None` when it has had none.
    data: Option<String>,
}

impl SseParser {
    /// Reads `chunk` and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    events.extend(self.line_ended(&String::from_utf8_lossy(&line)));
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    /// One whole line; the event it dispatches, if it was the blank line ending one.
    fn line_ended(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let name = self.name.take();
            let data = self.data.take()?;
            return Some(SseEvent {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `id`, `retry` and unknown fields mean nothing to a judging stream
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: name.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let body = b"event: accepted\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: verdict\r\ndata: x\r\n\r\n";
        for cut in 0..body.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&body[..cut]);
            events.extend(parser.push(&body[cut..]));
            assert_eq!(
                events,
                vec![event("accepted", "{\"a\":1}"), event("verdict", "x")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn follows_the_format_rules() {
        let mut parser = SseParser::default();
        let events = parser.push(b"data:one\ndata: two\n\nevent: usage\n\ndata\rid: 7\r\r");
        assert_eq!(
            events,
            vec![event("message", "one\ntwo"), event("message", "")],
            "lines joined, unnamed is `message`, no data dispatches nothing, a bare `data` is empty"
        );
        assert!(
            parser.push(b"event: verdict\ndata: cut short").is_empty(),
            "an unfinished event is not dispatched"
        );
    }
}
