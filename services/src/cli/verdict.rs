//! `autoj verdict`: parse a judgment text from stdin with the service's own parser.

use autoj_judge::protocol::verdict::{parse_pairwise, parse_single, Winner};
use clap::ValueEnum;
use serde_json::{json, Value};

/// Which protocol the text answers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// Two responses; a winner or a tie.
    Pairwise,
    /// One response; a rating.
    Single,
}

/// The parsed verdict as one JSON object.
pub fn verdict_json(text: &str, protocol: ProtocolArg) -> Value {
    match protocol {
        ProtocolArg::Pairwise => {
            let p = parse_pairwise(text);
            json!({
                "protocol": "pairwise",
                "winner": p.winner.map(|w| match w {
                    Winner::Response1 => "response_1",
                    Winner::Response2 => "response_2",
                    Winner::Tie => "tie",
                }),
                "key_factors": p.key_factors,
                "verdict_sentence": p.verdict_sentence,
            })
        }
        ProtocolArg::Single => {
            let s = parse_single(text);
            json!({
                "protocol": "single",
                "rating": s.rating,
                "verdict_sentence": s.verdict_sentence,
            })
        }
    }
}
