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

    /// The group confidence below which this model's decisions are more often wrong than
    /// right, when the model ships one; used where the config sets no `min_confidence`.
    fn recommended_min_confidence(&self) -> Option<f32> {
        None
    }
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

/// What the router makes of one query's whole distribution over scenarios.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The most probable group holds at least the configured confidence: route on its most
    /// probable scenario.
    Confident {
        /// The scenario routed on.
        scenario: String,
        /// The probability summed over its group.
        group_probability: f32,
    },
    /// No group is probable enough: route on the request's language and the default pool.
    Unsure {
        /// The best group's summed probability, below the threshold.
        group_probability: f32,
    },
}

/// The group decision: probabilities summed per group (a scenario outside the groups counts
/// alone), the most probable group, and its most probable scenario with the group's summed
/// probability. A query whose scenarios split within one group still routes confidently to
/// that group, where the top scenario alone would look unsure. `None` for no predictions.
pub fn group_decision(
    predictions: &[Prediction],
    group_of: impl Fn(&str) -> Option<String>,
) -> Option<(String, f32)> {
    let key = |p: &Prediction| group_of(&p.scenario).unwrap_or_else(|| p.scenario.clone());
    let mut mass: Vec<(String, f32)> = Vec::new();
    for p in predictions {
        let k = key(p);
        match mass.iter_mut().find(|(g, _)| *g == k) {
            Some((_, m)) => *m += p.probability,
            None => mass.push((k, p.probability)),
        }
    }
    // The first of equally probable groups wins (the order is the classifier's).
    let (group, probability) =
        mass.into_iter()
            .fold(None, |best: Option<(String, f32)>, (g, m)| match best {
                Some((_, b)) if b >= m => best,
                _ => Some((g, m)),
            })?;
    let scenario = predictions.iter().filter(|p| key(p) == group).fold(
        None,
        |best: Option<&Prediction>, p| match best {
            Some(b) if b.probability >= p.probability => Some(b),
            _ => Some(p),
        },
    )?;
    Some((scenario.scenario.clone(), probability))
}

/// A cheap, cloneable handle to the classifier worker thread. The thread ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct ClassifierHandle {
    /// The bounded job queue.
    jobs: mpsc::Sender<Job>,
    /// Below this summed group probability a query counts as unsure.
    min_confidence: f32,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("queries", &self.queries.len())
            .finish()
    }
}

impl ClassifierHandle {
    /// Starts the worker thread that owns `classifier`, with room for `queue` waiting jobs;
    /// a query whose best group holds less than `min_confidence` is [`Decision::Unsure`].
    pub fn spawn(
        classifier: Box<dyn Classifier>,
        queue: usize,
        min_confidence: f32,
    ) -> Result<Self, RouterError> {
        let (jobs, rx) = mpsc::channel(queue.max(1));
        std::thread::Builder::new()
            .name("autoj-classifier".into())
            .spawn(move || worker(classifier, rx))
            .map_err(|e| RouterError::Server(format!("cannot start classifier thread: {e}")))?;
        Ok(Self {
            jobs,
            min_confidence,
        })
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

    /// The group decision for one query over its whole distribution, with `group_of`
    /// naming each scenario's group.
    pub async fn decide(
        &self,
        query: &str,
        group_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Decision, RouterError> {
        let mut results = self.classify(vec![query.to_owned()], usize::MAX).await?;
        let predictions = results.pop().unwrap_or_default();
        let (scenario, group_probability) = group_decision(&predictions, group_of)
            .ok_or(RouterError::ClassifierShape { got: 0, want: 1 })?;
        Ok(if group_probability < self.min_confidence {
            Decision::Unsure { group_probability }
        } else {
            Decision::Confident {
                scenario,
                group_probability,
            }
        })
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

    fn p(scenario: &str, probability: f32) -> Prediction {
        Prediction {
            scenario: scenario.into(),
            group: None,
            probability,
        }
    }

    #[test]
    fn the_group_with_most_mass_wins_over_the_top_scenario() {
        let group_of = |s: &str| match s {
            "code_a" | "code_b" | "code_c" => Some("Code".to_owned()),
            "essay" => Some("Writing".to_owned()),
            _ => None,
        };
        // The top scenario is in Writing, but Code holds more of the distribution.
        let predictions = [
            p("essay", 0.30),
            p("code_a", 0.25),
            p("code_b", 0.20),
            p("code_c", 0.15),
            p("chitchat", 0.10),
        ];
        let (scenario, mass) = group_decision(&predictions, group_of).unwrap();
        assert_eq!(scenario, "code_a", "the best scenario of the best group");
        assert!((mass - 0.60).abs() < 1e-6);
        // A scenario outside the groups counts alone.
        let (scenario, mass) =
            group_decision(&[p("chitchat", 0.7), p("essay", 0.3)], group_of).unwrap();
        assert_eq!((scenario.as_str(), mass), ("chitchat", 0.7));
        assert_eq!(group_decision(&[], group_of), None);
    }

    #[test]
    fn top_k_orders_by_probability() {
        let top = top_k_of(&[0.1, 0.7, 0.2], 2, |i| (format!("s{i}"), None));
        let names: Vec<_> = top.iter().map(|p| p.scenario.as_str()).collect();
        assert_eq!(names, ["s1", "s2"]);
    }
}
