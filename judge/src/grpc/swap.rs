//! `swap_check`: the pair is judged in both orders and a `Consistency` event reports whether
//! the two verdicts agree (Auto-J's position-bias check). The swapped judgment's events carry
//! `order = 1` and its verdict is mapped back to the order the client sent.

use autoj_proto::v1 as pb;
use futures::StreamExt;
use pb::judge_event::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use autoj_proto::stream::EventStream;

/// Events buffered between the combined stream's task and the client.
const BUFFER: usize = 64;

/// Marks an event of the swapped judgment: `order = 1`, and a verdict mapped back to the
/// client's order (Response 1 and 2 exchanged, their probabilities too).
pub fn mark_swapped(mut ev: pb::JudgeEvent) -> pb::JudgeEvent {
    match ev.event.as_mut() {
        Some(Event::Accepted(a)) => a.order = 1,
        Some(Event::CritiqueDelta(d)) => d.order = 1,
        Some(Event::Usage(u)) => u.order = 1,
        Some(Event::Verdict(v)) => {
            v.order = 1;
            if let Some(pb::verdict::Result::Pairwise(p)) = v.result.as_mut() {
                p.winner = swap_winner(p.winner);
                std::mem::swap(&mut p.p_response_1, &mut p.p_response_2);
            }
        }
        Some(Event::Consistency(_) | Event::TokenLogprob(_)) | None => {}
    }
    ev
}

fn swap_winner(w: i32) -> i32 {
    match pb::Winner::try_from(w) {
        Ok(pb::Winner::Response1) => pb::Winner::Response2 as i32,
        Ok(pb::Winner::Response2) => pb::Winner::Response1 as i32,
        _ => w,
    }
}

fn winner_of(ev: &pb::JudgeEvent) -> Option<i32> {
    match &ev.event {
        Some(Event::Verdict(pb::Verdict {
            result: Some(pb::verdict::Result::Pairwise(p)),
            ..
        })) => Some(p.winner),
        _ => None,
    }
}

/// The `Consistency` event for the two (mapped-back) winners: consistent when both name the
/// same winner; the combined verdict is that winner, else Tie.
pub fn consistency(original: i32, swapped: i32) -> pb::JudgeEvent {
    let unresolved = pb::Winner::Unspecified as i32;
    let consistent = original == swapped && original != unresolved;
    pb::JudgeEvent {
        event: Some(Event::Consistency(pb::Consistency {
            consistent,
            original,
            swapped,
            combined: if consistent {
                original
            } else {
                pb::Winner::Tie as i32
            },
        })),
    }
}

/// Relays every event of `first`, then of `second`, then the `Consistency` event. An error
/// ends the stream; a client that hangs up ends the relay (and with it both judgments).
pub fn combine(first: EventStream, second: EventStream) -> EventStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut winners = [pb::Winner::Unspecified as i32; 2];
        for (i, mut stream) in [first, second].into_iter().enumerate() {
            while let Some(item) = stream.next().await {
                if let Some(w) = item.as_ref().ok().and_then(winner_of) {
                    winners[i] = w;
                }
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }
        let _ = tx.send(Ok(consistency(winners[0], winners[1]))).await;
    });
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_verdict_maps_back() {
        let ev = pb::JudgeEvent {
            event: Some(Event::Verdict(pb::Verdict {
                result: Some(pb::verdict::Result::Pairwise(pb::PairwiseVerdict {
                    winner: pb::Winner::Response1 as i32,
                    p_response_1: Some(0.7),
                    p_response_2: Some(0.2),
                    p_tie: Some(0.1),
                    key_factors: vec![],
                })),
                ..Default::default()
            })),
        };
        let Some(Event::Verdict(v)) = mark_swapped(ev).event else {
            panic!()
        };
        let Some(pb::verdict::Result::Pairwise(p)) = v.result else {
            panic!()
        };
        assert_eq!(v.order, 1);
        assert_eq!(p.winner, pb::Winner::Response2 as i32);
        assert_eq!((p.p_response_1, p.p_response_2), (Some(0.2), Some(0.7)));
    }

    #[test]
    fn disagreement_combines_to_tie() {
        let r1 = pb::Winner::Response1 as i32;
        let r2 = pb::Winner::Response2 as i32;
        let Some(Event::Consistency(c)) = consistency(r1, r2).event else {
            panic!()
        };
        assert!(!c.consistent);
        assert_eq!(c.combined, pb::Winner::Tie as i32);
        let Some(Event::Consistency(c)) = consistency(r2, r2).event else {
            panic!()
        };
        assert!(c.consistent);
        assert_eq!(c.combined, r2);
    }
}
