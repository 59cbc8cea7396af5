//! `autoj compare` and `autoj critique`: call a running server and print the critique as
//! it streams, then the verdict (or one JSON object per event with `--json`).

use std::io::Write;

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Template language on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LangArg {
    /// Detect from the query.
    Auto,
    /// English.
    En,
    /// Chinese.
    Zh,
}

impl LangArg {
    /// The request field's value.
    pub fn proto(self) -> pb::Language {
        match self {
            Self::Auto => pb::Language::Auto,
            Self::En => pb::Language::En,
            Self::Zh => pb::Language::Zh,
        }
    }
}

/// The request's truncation policy for `--no-truncate`.
pub fn truncation(no_truncate: bool) -> pb::Truncation {
    if no_truncate {
        pb::Truncation::Refuse
    } else {
        pb::Truncation::Auto
    }
}

/// Options shared by the client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address (`https://` with --tls-ca).
    #[arg(long, env = "AUTOJ_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// API key and TLS trust for a secured server.
    #[command(flatten)]
    pub secure: SecureClientArgs,
    /// Print one JSON object per event instead of text.
    #[arg(long)]
    pub json: bool,
    /// Template language.
    #[arg(long, value_enum, default_value = "auto")]
    pub language: LangArg,
    /// Scenario to use instead of classifying the query (e.g. `code_generation`).
    #[arg(long, default_value = "")]
    pub scenario: String,
    /// Generated-token limit (server default 1024).
    #[arg(long)]
    pub max_new_tokens: Option<u32>,
    /// Sampling temperature (default greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Refuse (FAILED_PRECONDITION) instead of truncating input that does not fit.
    #[arg(long)]
    pub no_truncate: bool,
    /// Also judge the pair in swapped order and report whether the orders agree (compare).
    #[arg(long)]
    pub swap_check: bool,
}

impl ClientArgs {
    fn options(&self) -> pb::JudgeOptions {
        pb::JudgeOptions {
            language: self.language.proto() as i32,
            scenario: self.scenario.clone(),
            swap_check: self.swap_check,
            generation: Some(pb::GenerationOptions {
                max_new_tokens: self.max_new_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                stop: Vec::new(),
            }),
            truncation: truncation(self.no_truncate) as i32,
        }
    }
}

/// How a client reaches a secured router: API key and TLS trust.
#[derive(Debug, Clone, Default, Args)]
pub struct SecureClientArgs {
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "AUTOJ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM CA certificate to verify the server's TLS certificate; implies TLS.
    #[arg(long, env = "AUTOJ_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Name to verify in the server's certificate (default: the address's host).
    #[arg(long, env = "AUTOJ_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

impl SecureClientArgs {
    /// A channel to `addr`: TLS when a CA is given (an `http://` address is dialled as
    /// `https://`), plaintext otherwise.
    pub async fn connect(&self, addr: &str) -> anyhow::Result<Channel> {
        let mut url = addr.to_owned();
        if self.tls_ca.is_some() {
            if let Some(rest) = addr.strip_prefix("http://") {
                url = format!("https://{rest}");
            }
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("bad address {addr}: {e}"))?;
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))
    }

    /// `message` as a request carrying the API key, if one is set.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(key) = &self.api_key {
            let value = format!("Bearer {}", key.trim())
                .parse()
                .map_err(|_| anyhow::anyhow!("the API key holds characters a header cannot"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The request a client command sends.
#[derive(Debug, Clone)]
pub enum ClientRequest {
    /// Pairwise.
    Compare {
        /// Query.
        query: String,
        /// Response 1.
        response_1: String,
        /// Response 2.
        response_2: String,
    },
    /// Single.
    Critique {
        /// Query.
        query: String,
        /// Response.
        response: String,
    },
}

/// Sends the request and prints the stream to stdout. Returns an error (with the gRPC
/// status) when the call fails.
pub async fn run(req: ClientRequest, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = JudgeClient::new(args.secure.connect(&args.addr).await?);
    let options = Some(args.options());
    let mut stream = match req {
        ClientRequest::Compare {
            query,
            response_1,
            response_2,
        } => {
            client
                .compare(args.secure.request(pb::CompareRequest {
                    query,
                    response_1,
                    response_2,
                    options,
                })?)
                .await?
        }
        ClientRequest::Critique { query, response } => {
            client
                .critique(args.secure.request(pb::CritiqueRequest {
                    query,
                    response,
                    options,
                })?)
                .await?
        }
    }
    .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let Some(ev) = ev.event else { continue };
        if args.json {
            writeln!(out, "{}", event_json(&ev))?;
        } else {
            print_text(&mut out, &ev)?;
        }
        out.flush()?;
    }
    Ok(())
}

fn winner_name(w: i32) -> Value {
    match pb::Winner::try_from(w) {
        Ok(pb::Winner::Response1) => json!("response_1"),
        Ok(pb::Winner::Response2) => json!("response_2"),
        Ok(pb::Winner::Tie) => json!("tie"),
        _ => Value::Null,
    }
}

fn source_name(s: i32) -> &'static str {
    match pb::VerdictSource::try_from(s) {
        Ok(pb::VerdictSource::Parsed) => "parsed",
        Ok(pb::VerdictSource::Forced) => "forced",
        Ok(pb::VerdictSource::Unresolved) => "unresolved",
        _ => "unspecified",
    }
}

/// One event as a JSON object (`{"type": ..., ...}`).
pub fn event_json(ev: &pb::judge_event::Event) -> Value {
    use pb::judge_event::Event;
    match ev {
        Event::Accepted(a) => json!({
            "type": "accepted", "request_id": a.request_id, "scenario": a.scenario,
            "model": a.model, "replica": a.replica, "prompt_tokens": a.prompt_tokens,
            "truncated": a.truncated, "truncated_tokens": a.truncated_tokens,
            "language": if a.language == pb::Language::Zh as i32 { "zh" } else { "en" },
        }),
        Event::CritiqueDelta(d) => {
            json!({"type": "critique_delta", "text": d.text, "order": d.order})
        }
        Event::Verdict(v) => {
            let mut o = json!({"type": "verdict", "source": source_name(v.source), "raw_text": v.raw_text, "order": v.order});
            match &v.result {
                Some(pb::verdict::Result::Pairwise(p)) => {
                    o["winner"] = winner_name(p.winner);
                    o["key_factors"] = json!(p.key_factors);
                    o["p_response_1"] = json!(p.p_response_1);
                    o["p_response_2"] = json!(p.p_response_2);
                    o["p_tie"] = json!(p.p_tie);
                }
                Some(pb::verdict::Result::Single(s)) => {
                    o["rating"] = json!(s.rating);
                    o["expected_rating"] = json!(s.expected_rating);
                    o["distribution"] = json!(s.distribution);
                }
                None => {}
            }
            o
        }
        Event::Usage(u) => json!({
            "type": "usage", "prompt_tokens": u.prompt_tokens,
            "cached_prompt_tokens": u.cached_prompt_tokens, "completion_tokens": u.completion_tokens,
            "queue_ms": u.queue_ms, "prefill_ms": u.prefill_ms, "decode_ms": u.decode_ms,
            "finish_reason": pb::FinishReason::try_from(u.finish_reason).map(|f| f.as_str_name()).unwrap_or("?"),
        }),
        Event::Consistency(c) => json!({
            "type": "consistency", "consistent": c.consistent, "original": winner_name(c.original),
            "swapped": winner_name(c.swapped), "combined": winner_name(c.combined),
        }),
        Event::TokenLogprob(t) => json!({
            "type": "token_logprob",
            "token": t.chosen.as_ref().map(|c| c.token.clone()),
            "logprob": t.chosen.as_ref().map(|c| c.logprob),
        }),
    }
}

fn print_text(out: &mut impl Write, ev: &pb::judge_event::Event) -> std::io::Result<()> {
    use pb::judge_event::Event;
    match ev {
        Event::Accepted(a) => {
            if a.truncated {
                writeln!(
                    out,
                    "[input truncated: {} tokens cut to fit the context]",
                    a.truncated_tokens
                )?;
            }
        }
        Event::CritiqueDelta(d) => write!(out, "{}", d.text)?,
        Event::Verdict(v) => {
            let verdict = match &v.result {
                Some(pb::verdict::Result::Pairwise(p)) => match winner_name(p.winner) {
                    Value::String(s) => s,
                    _ => "unresolved".into(),
                },
                Some(pb::verdict::Result::Single(s)) => s
                    .rating
                    .map_or("unresolved".into(), |r| format!("rating {r}")),
                None => "none".into(),
            };
            writeln!(out, "\n\n== verdict: {verdict} ({})", source_name(v.source))?;
        }
        Event::Usage(u) => writeln!(
            out,
            "== {} prompt + {} generated tokens ({} prompt tokens from the prefix cache); prefill {:.0} ms, decode {:.0} ms",
            u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens, u.prefill_ms, u.decode_ms
        )?,
        Event::Consistency(c) => writeln!(out, "== consistent across orders: {}", c.consistent)?,
        // Judging streams carry none (only Judge.Chat does).
        Event::TokenLogprob(_) => {}
    }
    Ok(())
}
