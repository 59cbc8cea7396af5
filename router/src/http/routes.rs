//! The route table and its handlers: one per RPC, each decoding its message, building the
//! in-process gRPC request (`call`) and calling `RouterService`'s `Judge` or `Scenarios`
//! method, then answering with JSON, a gathered judgment or Server-Sent Events.

use autoj_proto::v1::judge_server::Judge;
use autoj_proto::v1::scenarios_server::Scenarios;
use autoj_proto::v1::{
    ClassifyRequest, CompareRequest, CritiqueRequest, GetCriteriaRequest, ListScenariosRequest,
    ScoreRequest,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use tonic::Status;

use super::call::{decode, CallParams};
use super::errors::{json_response, HttpError};
use super::judgment::Judgment;
use super::openai::CompletionRequest;
use super::{openai_answer, page, sse, HttpDoor};
use crate::backend::EventStream;

/// The query parameters, or why they do not parse.
type Params = Result<Query<CallParams>, QueryRejection>;
/// The body, or why it could not be read (too large, cut short).
type Body = Result<Bytes, BytesRejection>;
/// What every handler answers.
type Answer = Result<Response, HttpError>;

/// Every route of the door over `door`.
pub fn routes(door: HttpDoor) -> axum::Router {
    let limit = door.body_limit;
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/judge/compare", post(compare))
        .route("/v1/judge/critique", post(critique))
        .route("/v1/judge/score", post(score))
        .route("/v1/scenarios", get(list))
        .route("/v1/scenarios/classify", post(classify))
        .route("/v1/scenarios/{name}/criteria", get(criteria))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .merge(page::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read whole before decoding: the limit bounds that buffer (413 above it).
        .layer(DefaultBodyLimit::max(limit))
        .with_state(door)
}

/// `GET /healthz`: 200 while every judge pool has a ready replica (gRPC health's SERVING),
/// 503 before that and from the moment the server starts draining.
async fn healthz(State(door): State<HttpDoor>) -> Response {
    let serving = *door.ready.borrow();
    let (status, word) = if serving {
        (StatusCode::OK, "SERVING")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING")
    };
    json_response(status, &serde_json::json!({ "status": word }))
}

/// `POST /v1/judge/compare`: `Judge.Compare`.
async fn compare(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Answer {
    let head = door.head(&headers, params)?;
    let message: CompareRequest = decode(body, door.body_limit, "CompareRequest")?;
    let stream = head.stream;
    let events = door.service.compare(head.request(message)).await?;
    judgment(events.into_inner(), stream).await
}

/// `POST /v1/judge/critique`: `Judge.Critique`.
async fn critique(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Answer {
    let head = door.head(&headers, params)?;
    let message: CritiqueRequest = decode(body, door.body_limit, "CritiqueRequest")?;
    let stream = head.stream;
    let events = door.service.critique(head.request(message)).await?;
    judgment(events.into_inner(), stream).await
}

/// A judging stream as events (when asked for) or as one gathered document.
async fn judgment(events: EventStream, stream: bool) -> Answer {
    if stream {
        Ok(sse::respond(events))
    } else {
        Ok(Judgment::gather(events).await?.into_response())
    }
}

/// `POST /v1/judge/score`: `Judge.Score` (unary; `stream` does not apply).
async fn score(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Answer {
    let head = door.head(&headers, params)?;
    let message: ScoreRequest = decode(body, door.body_limit, "ScoreRequest")?;
    ok(door.service.score(head.request(message)).await)
}

/// `POST /v1/scenarios/classify`: `Scenarios.Classify`.
async fn classify(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Answer {
    let head = door.head(&headers, params)?;
    let message: ClassifyRequest = decode(body, door.body_limit, "ClassifyRequest")?;
    ok(door.service.classify(head.request(message)).await)
}

/// `GET /v1/scenarios`: `Scenarios.List`.
async fn list(State(door): State<HttpDoor>, headers: HeaderMap, params: Params) -> Answer {
    let head = door.head(&headers, params)?;
    ok(door
        .service
        .list(head.request(ListScenariosRequest {}))
        .await)
}

/// `GET /v1/scenarios/{name}/criteria`: `Scenarios.GetCriteria`.
async fn criteria(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let head = door.head(&headers, params)?;
    let Path(scenario) =
        name.map_err(|e| HttpError::invalid(format!("scenario name: {}", e.body_text())))?;
    let message = GetCriteriaRequest { scenario };
    ok(door.service.get_criteria(head.request(message)).await)
}

/// `POST /v1/chat/completions`: OpenAI's chat completions as one `Judge.Chat` call.
async fn chat_completions(
    State(door): State<HttpDoor>,
    headers: HeaderMap,
    params: Params,
    body: Body,
) -> Answer {
    let head = door.head(&headers, params)?;
    let request: CompletionRequest = decode(body, door.body_limit, "chat completion request")?;
    let message = request.to_chat()?;
    let events = door.service.chat(head.request(message)).await?.into_inner();
    if request.stream {
        let usage = request.stream_options.is_some_and(|o| o.include_usage);
        Ok(openai_answer::chunks(events, &request.model, usage))
    } else {
        openai_answer::document(events, &request.model, request.logprobs).await
    }
}

/// `GET /v1/models`: the judge pools a chat completion may name, the default first.
async fn models(State(door): State<HttpDoor>, headers: HeaderMap, params: Params) -> Answer {
    door.head(&headers, params)?;
    let data: Vec<_> = door
        .service
        .pool_names()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "autoj"}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    ))
}

/// A unary call's answer: its message as JSON, or its status.
fn ok<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Answer {
    Ok(json_response(StatusCode::OK, result?.get_ref()))
}

/// Any other path: 404 naming it.
async fn not_found(uri: Uri) -> HttpError {
    HttpError::Status(Status::not_found(format!(
        "no route `{}`; docs/api.md#http lists the routes",
        uri.path()
    )))
}

/// A known path with another method: 405.
async fn method_not_allowed() -> HttpError {
    HttpError::MethodNotAllowed
}
