//! `Judge.Chat` on the router: checked against the router's limits, sent to the pool it
//! names (an OpenAI `model`; the default pool when empty) and relayed like a judgment, with
//! the same admission permit, failover before the first event, deadline and metrics. No
//! scenario is classified: a chat is not a judgment of Auto-J's protocols.

use std::sync::Arc;

use autoj_proto::v1::{ChatRequest, ScenarioSource};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{
    deadline_of, forward_span, forwarded_metadata, outbound, relayed, Inner, RouterService,
};
use crate::backend::EventStream;
use crate::error::RouterError;
use crate::metrics::{Call, RouterCall};
use crate::pool::Pool;
use crate::relay::{peek, Stamp};
use crate::validate::invalid;

impl RouterService {
    /// The judge pools a chat may name, the default first (what `/v1/models` lists).
    pub fn pool_names(&self) -> Vec<String> {
        pool_names(&self.inner)
    }

    /// A chat inside its trace span and metrics, as the judging streams are.
    pub(super) async fn observed_chat(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::trace::call_span("Chat", request.metadata());
        let mut call = RouterCall::start("Chat");
        let started = self
            .inner
            .chat(request, &mut call)
            .instrument(span.clone())
            .await;
        autoj_proto::calls::respond(started.map_err(RouterError::into_status), call, span)
    }
}

impl Inner {
    /// Checks the request, picks its pool and relays the replica's stream.
    async fn chat(
        &self,
        request: Request<ChatRequest>,
        call: &mut Call,
    ) -> Result<Response<EventStream>, RouterError> {
        let permit = self.admit()?;
        let deadline = deadline_of(request.metadata());
        let metadata = forwarded_metadata(request.metadata());
        let msg = request.into_inner();
        self.check_chat(&msg)?;
        let pool = self.chat_pool(&msg.pool)?;
        call.recorder_mut().routed(None, pool.name());
        let served = pool
            .call(deadline, |backend| {
                let request = outbound(&metadata, msg.clone(), deadline);
                async move { peek(backend.chat(request).await?).await }
            })
            .instrument(forward_span())
            .await?;
        let stamp = Stamp {
            scenario: String::new(),
            source: ScenarioSource::None,
        };
        Ok(relayed(served, stamp, deadline, permit))
    }

    /// The router's own limits: total message bytes and the tokens asked for.
    fn check_chat(&self, msg: &ChatRequest) -> Result<(), RouterError> {
        if msg.messages.is_empty() {
            return Err(invalid("messages", "at least one message is required"));
        }
        let bytes: usize = msg.messages.iter().map(|m| m.content.len()).sum();
        if bytes > self.limits.max_input_bytes {
            return Err(invalid(
                "messages",
                format!(
                    "{bytes} bytes of text, over this router's limit `limits.max_input_bytes` = {}",
                    self.limits.max_input_bytes
                ),
            ));
        }
        let asked = msg.generation.as_ref().and_then(|g| g.max_new_tokens);
        match asked {
            Some(n) if n > self.limits.max_new_tokens => Err(invalid(
                "generation.max_new_tokens",
                format!(
                    "{n} is over this router's limit `limits.max_new_tokens` = {}",
                    self.limits.max_new_tokens
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The named pool, or the default pool for an empty name.
    fn chat_pool(&self, name: &str) -> Result<Arc<Pool>, RouterError> {
        let name = if name.is_empty() {
            self.table.default_pool()
        } else {
            name
        };
        self.pools
            .get(name)
            .cloned()
            .ok_or_else(|| RouterError::UnknownPool {
                field: "pool",
                name: name.to_owned(),
                known: pool_names(self).join(", "),
            })
    }
}

/// Every pool's name, the default first, the rest sorted.
fn pool_names(inner: &Inner) -> Vec<String> {
    let default = inner.table.default_pool();
    let mut names: Vec<String> = inner.pools.keys().cloned().collect();
    names.sort_by_key(|n| (n != default, n.clone()));
    names
}
