//! The scenario classifier seam: a [`Classifier`] trait (the ONNX model in production, a fake
//! in tests) and a [`ClassifierHandle`] that runs it on a dedicated thread.
//!
//! Inference is CPU-bound and the ONNX session needs `&mut` access, so one worker thread owns
//! the classifier and takes jobs from a bounded queue: the async reactor never blocks, one
//! query runs at a time (the model is tuned for one intra-op thread), and a full queue is
//! answered with RESOURCE_EXHAUSTED instead of piling up blocked threads.

use tokio::sync::{mpsc, oneshot};

use crate::error::RouterError;

/// One scenario the classifier proposes for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Scenario name (a catalog name).
    pub scenario: String,
    /// Its group, `None` for scenarios outside the groups.
    pub group: Option<String>,
    /// Probability in [0, 1].
    pub probability: f32,
}

/// Classifies a query into scenarios. Implemented by [`crate::onnx::OnnxClassifier`] and by
/// test fakes; the router reaches it only through a [`ClassifierHandle`].
pub trait Classifier: Send + 'static {
    /// Every scenario name the classifier can answer, checked against the catalog at start.
    fn labels(&self) -> Vec<String>;

    /// The `top_k` most probable scenarios for `query`, most probable first. Blocking.
    fn classify(&mut self, query: &str, top_k: usize) -> Result<Vec<Prediction>, RouterError>;
}

/// A classification job: the queries and where to send the answer.
struct Job {
    /// Queries, classified in order.
    queries: Vec<String>,
    /// Predictions per query.
    top_k: usize,
    /// The caller's reply channel; a dropped receiver means the caller gave up.
    reply: oneshot::Sender<Result<Vec<Vec<Prediction>>, RouterError>>,
}

/// A cheap, cloneable handle to the classifier worker thread. The thread ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct ClassifierHandle {
    /// The bounded job queue.
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("queries", &self.queries.len())
            .finish()
    }
}

impl ClassifierHandle {
    /// Starts the worker thread that owns `classifier`, with room for `queue` waiting jobs.
    pub fn spawn(classifier: Box<dyn Classifier>, queue: usize) -> Result<Self, RouterError> {
        let (jobs, rx) = mpsc::channel(queue.max(1));
        std::thread::Builder::new()
            .name("autoj-classifier".into())
            .spawn(move || worker(classifier, rx))
            .map_err(|e| RouterError::Server(format!("cannot start classifier thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Classifies `queries` (in order) off the reactor; RESOURCE_EXHAUSTED when the queue is
    /// full. Dropping the future abandons the job (the worker skips it if not yet started).
    pub async fn classify(
        &self,
        queries: Vec<String>,
        top_k: usize,
    ) -> Result<Vec<Vec<Prediction>>, RouterError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            queries,
            top_k,
            reply,
        };
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RouterError::ClassifierBusy,
            mpsc::error::TrySendError::Closed(_) => RouterError::ClassifierStopped,
        })?;
        answer.await.map_err(|_| RouterError::ClassifierStopped)?
    }

    /// The most probable scenario of one query.
    pub async fn top1(&self, query: &str) -> Result<Prediction, RouterError> {
        let mut results = self.classify(vec![query.to_owned()], 1).await?;
        results
            .pop()
            .and_then(|mut top| (!top.is_empty()).then(|| top.swap_remove(0)))
            .ok_or(RouterError::ClassifierShape { got: 0, want: 1 })
    }
}

/// The worker loop: one job at a time until every handle is gone.
fn worker(mut classifier: Box<dyn Classifier>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        if job.reply.is_closed() {
            continue; // the client went away while the job waited
        }
        let result = job
            .queries
            .iter()
            .map(|q| classifier.classify(q, job.top_k))
            .collect();
        // A closed receiver means the caller gave up; nothing to do.
        let _ = job.reply.send(result);
    }
}

/// Sorts `(label index, probability)` pairs and keeps the `top_k` most probable, mapping
/// indices to names with `label`; shared by every classifier that yields a distribution.
pub fn top_k_of(
    probabilities: &[f32],
    top_k: usize,
    label: impl Fn(usize) -> (String, Option<String>),
) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    order
        .into_iter()
        .take(top_k)
        .map(|i| {
            let (scenario, group) = label(i);
            Prediction {
                scenario,
                group,
                probability: probabilities[i],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability() {
        let top = top_k_of(&[0.1, 0.7, 0.2], 2, |i| (format!("s{i}"), None));
        let names: Vec<_> = top.iter().map(|p| p.scenario.as_str()).collect();
        assert_eq!(names, ["s1", "s2"]);
    }
}
