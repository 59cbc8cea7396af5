//! How `autoj eval` judges its rows: through the server's bulk `Evaluate` RPC, each result
//! turned into the row's output JSON.

use std::collections::BTreeSet;

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use futures::StreamExt;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::{EvalArgs, Row, Task};
use crate::cli::client::event_json;

/// The output row of input row `index`, before judging: its index and carried fields.
fn row_head(index: usize, row: &Row) -> Value {
    let mut out = json!({"index": index});
    out.as_object_mut()
        .expect("an object")
        .extend(row.carried.clone());
    match row.task {
        Task::Pairwise { .. } => out["kind"] = json!("pairwise"),
        Task::Single { .. } => out["kind"] = json!("single"),
        Task::Invalid(_) => {}
    }
    out
}

/// The `Evaluate` item of a judgeable row, its id the row's index.
fn evaluate_item(args: &EvalArgs, index: usize, row: &Row) -> Option<pb::EvaluateItem> {
    use pb::evaluate_item::Request;
    let options = Some(args.options(row));
    let request = match row.task.clone() {
        Task::Pairwise {
            prompt,
            response_1,
            response_2,
        } => Request::Compare(pb::CompareRequest {
            query: prompt,
            response_1,
            response_2,
            options,
        }),
        Task::Single { prompt, response } => Request::Critique(pb::CritiqueRequest {
            query: prompt,
            response,
            options,
        }),
        Task::Invalid(_) => return None,
    };
    Some(pb::EvaluateItem {
        id: index.to_string(),
        request: Some(request),
    })
}

/// Judges the rows `todo` through the server's `Evaluate` RPC: `--concurrency` bidirectional
/// streams, each fed its share of the rows as the server asks for them (its window and
/// HTTP/2 flow control are the backpressure). Output rows come back as each judgment ends;
/// rows that cannot be sent (invalid input) come back at once with their error, and the rows
/// of a stream that fails come back with that stream's status.
pub(super) fn judge_rows<'a>(
    client: JudgeClient<Channel>,
    args: &'a EvalArgs,
    rows: &'a [Row],
    todo: Vec<usize>,
) -> impl futures::Stream<Item = Value> + 'a {
    let (valid, invalid): (Vec<usize>, Vec<usize>) = todo
        .into_iter()
        .partition(|&i| !matches!(rows[i].task, Task::Invalid(_)));
    let refused = invalid.into_iter().map(|i| {
        let mut out = row_head(i, &rows[i]);
        if let Task::Invalid(message) = &rows[i].task {
            out["error"] = json!({"code": "InvalidInput", "message": message});
        }
        out
    });
    let streams = usize::from(args.concurrency).min(valid.len()).max(1);
    let shares: Vec<Vec<usize>> = (0..streams)
        .map(|s| valid.iter().copied().skip(s).step_by(streams).collect())
        .collect();
    let judged = shares
        .into_iter()
        .filter(|share| !share.is_empty())
        .map(move |share| evaluate_stream(client.clone(), args, rows, share).boxed());
    futures::stream::iter(refused).chain(futures::stream::select_all(judged))
}

/// One `Evaluate` stream over the rows `share`: an output row per result, then a failed row
/// for every row the stream did not answer when it ended early.
fn evaluate_stream<'a>(
    client: JudgeClient<Channel>,
    args: &'a EvalArgs,
    rows: &'a [Row],
    share: Vec<usize>,
) -> impl futures::Stream<Item = Value> + 'a {
    let pending: BTreeSet<usize> = share.iter().copied().collect();
    let start = Phase::Start(client, share);
    futures::stream::unfold((start, pending), move |(phase, mut pending)| async move {
        let mut phase = phase;
        loop {
            phase = match phase {
                Phase::Start(mut client, share) => {
                    let items: Vec<pb::EvaluateItem> = share
                        .iter()
                        .filter_map(|&i| evaluate_item(args, i, &rows[i]))
                        .collect();
                    let call = match args.secure.request(futures::stream::iter(items)) {
                        Ok(request) => client.evaluate(request).await,
                        Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
                    };
                    match call {
                        Ok(response) => Phase::Reading(response.into_inner()),
                        Err(status) => Phase::Ended(status),
                    }
                }
                Phase::Reading(mut results) => match results.message().await {
                    Ok(Some(result)) => {
                        let index = result.id.parse::<usize>().ok();
                        match index.filter(|i| pending.remove(i)) {
                            Some(i) => {
                                let row = row_from_result(row_head(i, &rows[i]), result);
                                return Some((row, (Phase::Reading(results), pending)));
                            }
                            None => Phase::Reading(results),
                        }
                    }
                    Ok(None) => Phase::Ended(tonic::Status::data_loss(
                        "the server ended the Evaluate stream without this row's result",
                    )),
                    Err(status) => Phase::Ended(status),
                },
                Phase::Ended(status) => {
                    let i = pending.pop_first()?;
                    let row = failed(row_head(i, &rows[i]), &status);
                    return Some((row, (Phase::Ended(status), pending)));
                }
            }
        }
    })
}

/// Where one `Evaluate` stream is.
enum Phase {
    /// Not yet called: the client and the rows to send.
    Start(JudgeClient<Channel>, Vec<usize>),
    /// Reading results.
    Reading(tonic::Streaming<pb::EvaluateResult>),
    /// Ended (early when rows are still pending): why.
    Ended(tonic::Status),
}

/// The output row of one `Evaluate` result: its verdict(s), critique(s) and usage, or its
/// error.
fn row_from_result(mut out: Value, result: pb::EvaluateResult) -> Value {
    if result.error_code != 0 {
        let status = tonic::Status::new(tonic::Code::from(result.error_code), result.error_message);
        return failed(out, &status);
    }
    let mut critique = [String::new(), String::new()];
    for ev in result.events.into_iter().filter_map(|e| e.event) {
        let j = event_json(&ev);
        let order = j["order"].as_u64().unwrap_or(0) as usize;
        use pb::judge_event::Event;
        match &ev {
            Event::Accepted(a) if order == 0 => {
                if out.get("scenario").is_none() && !a.scenario.is_empty() {
                    out["scenario"] = json!(a.scenario);
                }
                out["judge"] = json!(a.model);
            }
            Event::CritiqueDelta(d) => critique[order.min(1)].push_str(&d.text),
            Event::Verdict(_) => copy_verdict(&mut out, &j, order),
            Event::Usage(u) if order == 0 => out["completion_tokens"] = json!(u.completion_tokens),
            Event::Consistency(_) => {
                out["consistent"] = j["consistent"].clone();
                out["combined"] = j["combined"].clone();
            }
            _ => {}
        }
    }
    out["critique"] = json!(critique[0]);
    if out.get("swap").is_some() {
        out["swap"]["critique"] = json!(critique[1]);
    }
    if out.get("source").is_none() {
        out["error"] =
            json!({"code": "Incomplete", "message": "the stream ended without a verdict"});
    }
    out
}

/// Copies a verdict event's fields into the row (order 0) or its `swap` object (order 1).
fn copy_verdict(out: &mut Value, verdict: &Value, order: usize) {
    let keys = [
        "winner",
        "p_response_1",
        "p_response_2",
        "p_tie",
        "rating",
        "expected_rating",
        "distribution",
        "source",
    ];
    let target = if order == 0 {
        out
    } else {
        out["swap"] = json!({});
        &mut out["swap"]
    };
    for k in keys {
        if let Some(v) = verdict.get(k) {
            target[k] = v.clone();
        }
    }
}

/// The output row with the call's status as its error.
pub(super) fn failed(mut out: Value, status: &tonic::Status) -> Value {
    out["error"] = json!({"code": format!("{:?}", status.code()), "message": status.message()});
    out
}
