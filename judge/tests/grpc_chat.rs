//! `Judge.Chat` over a real loopback gRPC connection: free-form chat with the judge model
//! (what the HTTP door's OpenAI-compatible endpoint serves). Accepted, text, Usage and no
//! verdict; token log-probabilities that agree with the text and with greedy choice; a
//! single user message is exactly Auto-J's `[INST]` prompt; bad input refused by name.

mod common;

use autoj_judge::engine::{PromptFormatChoice, Scheduling};
use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::protocol::prompt::{instruction, Lang, Task};
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, critique, within, Kind, TestServer};
use pb::judge_event::Event;

fn chat(
    messages: &[(&str, &str)],
    max_new_tokens: u32,
    top_logprobs: Option<u32>,
) -> pb::ChatRequest {
    pb::ChatRequest {
        messages: messages
            .iter()
            .map(|(role, content)| pb::ChatMessage {
                role: (*role).into(),
                content: (*content).into(),
            })
            .collect(),
        generation: Some(pb::GenerationOptions {
            max_new_tokens: Some(max_new_tokens),
            ..Default::default()
        }),
        logprobs: top_logprobs.is_some(),
        top_logprobs: top_logprobs.unwrap_or(0),
        pool: String::new(),
    }
}

fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CritiqueDelta(d) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

/// A server whose prompts are LLaMA-2 `[INST]` (Auto-J's format) though the tiny model has
/// a chat template of its own.
async fn inst_server() -> TestServer {
    TestServer::start_with(
        Kind::Gguf,
        TinySpec::default(),
        ServiceLimits::default(),
        8,
        |cfg| cfg.prompt_format = PromptFormatChoice::AutoJ,
    )
    .await
}

async fn run_chat(server: &mut TestServer, request: pb::ChatRequest) -> Vec<Event> {
    let stream = within(server.client.chat(request))
        .await
        .expect("chat")
        .into_inner();
    collect(stream).await.expect("stream")
}

/// The event order, and the log-probabilities of every generated token.
async fn streams_text_and_logprobs(server: &mut TestServer) {
    let talk = [
        ("system", "Answer briefly."),
        ("user", "Name a colour."),
        ("assistant", "Blue."),
        ("user", "Another one?"),
    ];
    let events = run_chat(server, chat(&talk, 12, Some(3))).await;
    let Event::Accepted(a) = &events[0] else {
        panic!("first event must be Accepted: {:?}", events[0]);
    };
    assert_eq!(a.protocol, pb::Protocol::Unspecified as i32);
    let Some(Event::Usage(u)) = events.last() else {
        panic!("last event must be Usage");
    };
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens),
        (a.prompt_tokens, 12)
    );
    assert_eq!(
        u.finish_reason,
        pb::FinishReason::Length as i32,
        "the tiny model never ends"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Verdict(_) | Event::Consistency(_))),
        "a chat has no verdict"
    );
    let tokens: Vec<&pb::TokenLogprob> = events
        .iter()
        .filter_map(|e| match e {
            Event::TokenLogprob(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 12, "one per generated token");
    let mut joined = String::new();
    for t in &tokens {
        let chosen = t.chosen.as_ref().unwrap();
        assert_eq!(t.top.len(), 3);
        assert!(
            t.top.windows(2).all(|w| w[0].logprob >= w[1].logprob),
            "most likely first"
        );
        // Greedy: the chosen token is the most likely one.
        assert_eq!(chosen.token, t.top[0].token);
        assert_eq!(chosen.logprob, t.top[0].logprob);
        let mass: f32 = t.top.iter().map(|p| p.logprob.exp()).sum();
        assert!(chosen.logprob <= 0.0 && mass <= 1.0 + 1e-4, "{mass}");
        assert_eq!(chosen.bytes, chosen.token.as_bytes());
        joined.push_str(&chosen.token);
    }
    assert_eq!(
        joined,
        text_of(&events),
        "token texts read in context make the text"
    );
}

#[tokio::test]
async fn chat_streams_text_and_logprobs_without_a_verdict() {
    // The model's own chat template, then LLaMA-2 turns.
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    streams_text_and_logprobs(&mut server).await;
    server.stop().await;
    let mut server = inst_server().await;
    streams_text_and_logprobs(&mut server).await;
    server.stop().await;
}

#[tokio::test]
async fn the_serial_engine_chats_the_same_way() {
    let mut server = TestServer::start_with(
        Kind::Hf,
        TinySpec::default(),
        ServiceLimits::default(),
        8,
        |cfg| cfg.scheduling = Scheduling::Serial,
    )
    .await;
    streams_text_and_logprobs(&mut server).await;
    server.stop().await;
}

#[tokio::test]
async fn one_user_message_is_auto_js_prompt() {
    let mut server = inst_server().await;
    let request = critique(10);
    let task = Task::Single {
        query: request.query.clone(),
        response: request.response.clone(),
    };
    let judged = collect(
        within(server.client.critique(request))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let instruction = instruction(&task, Lang::En);
    let chatted = run_chat(&mut server, chat(&[("user", &instruction)], 10, None)).await;
    let prompt = |events: &[Event]| match &events[0] {
        Event::Accepted(a) => a.prompt_tokens,
        other => panic!("{other:?}"),
    };
    assert_eq!(prompt(&chatted), prompt(&judged), "the same [INST] prompt");
    assert_eq!(
        text_of(&chatted),
        text_of(&judged),
        "so the same greedy text"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_chats_are_refused_by_name_and_the_server_keeps_serving() {
    let mut server = inst_server().await;
    let cases = [
        (
            chat(&[("tool", "x")], 4, None),
            tonic::Code::InvalidArgument,
            "messages[0].role",
        ),
        (
            chat(&[], 4, None),
            tonic::Code::InvalidArgument,
            "at least one message",
        ),
        (
            chat(&[("user", "a"), ("assistant", "b")], 4, None),
            tonic::Code::InvalidArgument,
            "last message",
        ),
        (
            chat(&[("user", "a"), ("user", "b")], 4, None),
            tonic::Code::InvalidArgument,
            "alternate",
        ),
        (
            chat(&[("user", "a")], 4, Some(21)),
            tonic::Code::InvalidArgument,
            "top_logprobs",
        ),
        (
            chat(&[("user", "a")], 4090, None),
            tonic::Code::FailedPrecondition,
            "context",
        ),
    ];
    for (request, code, needle) in cases {
        let Err(status) = within(server.client.chat(request)).await else {
            panic!("{needle}: accepted");
        };
        assert_eq!(status.code(), code, "{needle}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    let events = run_chat(&mut server, chat(&[("user", "still there?")], 3, None)).await;
    assert!(matches!(events.last(), Some(Event::Usage(u)) if u.completion_tokens == 3));
    server.stop().await;
}
