//! `auth.webhook`: asking the operator's own HTTP(S) service for the long-term key of a
//! username tern does not know itself.
//!
//! A worker whose engine meets such a username holds the request (see
//! `net::held`) and sends a [`Lookup`] here, without waiting: the queue is bounded
//! and a full one refuses at once. This task asks the service, at most
//! `auth.webhook.concurrency` lookups at a time and one per username however many
//! requests wait for it, each within `auth.webhook.timeout`. The answer (a key or a
//! refusal) or the failure goes into the shared [`ExternalKeys`] and every worker
//! holding requests for the username is told, so it hands them to its engine again:
//! a request is answered as soon as its key is known, and never blocks a worker.
//!
//! The URL and token are never logged, nor are passwords or keys; failures are logged
//! by kind at most every 30 s and counted by result.

pub mod answer;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};

use crate::auth::{ExternalAnswer, ExternalKeys};
use crate::config::AuthWebhookSettings;
use crate::core::Transport;
use crate::metrics::Metrics;
use crate::webhook::{JsonEndpoint, PostError};
use answer::{Question, Unusable};

/// Bytes read of an answer: a password or a key fits many times over.
const MAX_ANSWER: usize = 16 * 1024;

/// How often a failing service is warned about.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A username to look up, for the worker holding a request that carries it.
#[derive(Debug)]
pub struct Lookup {
    pub username: String,
    pub realm: String,
    pub client: SocketAddr,
    pub transport: Transport,
    /// The worker to tell when the answer is in.
    pub worker: usize,
}

/// Where workers send lookups.
#[derive(Clone)]
pub struct Lookups {
    tx: mpsc::Sender<Lookup>,
}

impl Lookups {
    /// Queues `lookup` without waiting; false when the queue is full (then nothing
    /// will answer it).
    pub fn ask(&self, lookup: Lookup) -> bool {
        self.tx.try_send(lookup).is_ok()
    }
}

/// Why a lookup brought no answer.
#[derive(Debug)]
enum Failure {
    Timeout,
    Unreachable(String),
    Unusable(Unusable),
    QueueFull,
}

impl Failure {
    fn name(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unreachable(_) => "unreachable",
            Failure::Unusable(unusable) => unusable.name(),
            Failure::QueueFull => "queue_full",
        }
    }
}

/// Starts the client of the service on the current runtime; `answered[i]` tells
/// worker `i` that a username it asked about has an answer (or a failure) in `keys`.
pub fn spawn(
    settings: &AuthWebhookSettings,
    keys: Arc<ExternalKeys>,
    answered: Vec<mpsc::UnboundedSender<Arc<str>>>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Lookups> {
    let endpoint = JsonEndpoint::new(
        "auth.webhook.url",
        settings.url.expose(),
        settings.token.as_ref().map(|t| t.expose().clone()),
        settings.timeout.0,
    )?;
    let (tx, rx) = mpsc::channel(settings.queue);
    let service = Service {
        endpoint: Arc::new(endpoint),
        keys,
        answered,
        metrics,
        concurrency: settings.concurrency,
        queue: settings.queue,
        last_warning: None,
    };
    tokio::spawn(service.run(rx));
    Ok(Lookups { tx })
}

struct Service {
    endpoint: Arc<JsonEndpoint>,
    keys: Arc<ExternalKeys>,
    answered: Vec<mpsc::UnboundedSender<Arc<str>>>,
    metrics: Arc<Metrics>,
    concurrency: usize,
    queue: usize,
    last_warning: Option<Instant>,
}

impl Service {
    async fn run(mut self, mut lookups: mpsc::Receiver<Lookup>) {
        // Usernames asked about or queued, with the workers waiting for each.
        let mut waiting: HashMap<String, Vec<usize>> = HashMap::new();
        let mut queued: VecDeque<Lookup> = VecDeque::new();
        let mut in_flight = JoinSet::new();
        let mut asking: HashMap<Id, String> = HashMap::new();
        loop {
            tokio::select! {
                lookup = lookups.recv() => {
                    let Some(lookup) = lookup else { return };
                    match waiting.entry(lookup.username.clone()) {
                        Entry::Occupied(mut workers) => {
                            if !workers.get().contains(&lookup.worker) {
                                workers.get_mut().push(lookup.worker);
                            }
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(vec![lookup.worker]);
                            if in_flight.len() < self.concurrency {
                                let username = lookup.username.clone();
                                let task = in_flight.spawn(ask(self.endpoint.clone(), lookup));
                                asking.insert(task.id(), username);
                            } else if queued.len() < self.queue {
                                queued.push_back(lookup);
                            } else {
                                let workers = waiting.remove(&lookup.username);
                                self.settle(&lookup.username, Err(Failure::QueueFull), workers);
                            }
                        }
                    }
                }
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => (e.id(), Err(Failure::Unreachable("the lookup task failed".into()))),
                    };
                    if let Some(username) = asking.remove(&id) {
                        let workers = waiting.remove(&username);
                        self.settle(&username, outcome, workers);
                    }
                    if let Some(next) = queued.pop_front() {
                        let username = next.username.clone();
                        let task = in_flight.spawn(ask(self.endpoint.clone(), next));
                        asking.insert(task.id(), username);
                    }
                }
            }
        }
    }

    /// Keeps the outcome for `username`, counts it and tells the waiting workers.
    fn settle(
        &mut self,
        username: &str,
        outcome: Result<ExternalAnswer, Failure>,
        workers: Option<Vec<usize>>,
    ) {
        let now = Instant::now();
        match outcome {
            Ok(answer) => {
                let result = match answer {
                    ExternalAnswer::Key(_) => "key",
                    ExternalAnswer::Refused => "refused",
                };
                self.metrics.auth_webhook_lookup(result);
                self.keys.store(username, answer, now);
            }
            Err(failure) => {
                self.metrics.auth_webhook_lookup(failure.name());
                self.keys.failed(username, now);
                self.warn(&failure, now);
            }
        }
        let username: Arc<str> = username.into();
        for worker in workers.unwrap_or_default() {
            if let Some(tx) = self.answered.get(worker) {
                let _ = tx.send(username.clone());
            }
        }
    }

    /// Warns about a failing service, at most every [`WARN_EVERY`]; never with the
    /// URL, the token or the username.
    fn warn(&mut self, failure: &Failure, now: Instant) {
        if self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        self.last_warning = Some(now);
        let why = match failure {
            Failure::Timeout => "no answer within auth.webhook.timeout".to_string(),
            Failure::Unreachable(e) => e.clone(),
            Failure::Unusable(Unusable::Status) => {
                "answered a status other than 200, 403 or 404".into()
            }
            Failure::Unusable(Unusable::Invalid) => {
                "answered 200 without a password or a 32-hex-digit key".into()
            }
            Failure::QueueFull => "more lookups waiting than auth.webhook.queue".into(),
        };
        tracing::warn!(
            "auth webhook: a lookup failed ({why}); such usernames are refused for auth.webhook.error_ttl (or served from a stale key within auth.webhook.stale_ttl); tern_auth_webhook_lookups_total counts every failure"
        );
    }
}

/// Asks the service about `lookup.username`.
async fn ask(endpoint: Arc<JsonEndpoint>, lookup: Lookup) -> Result<ExternalAnswer, Failure> {
    let question = Question {
        username: &lookup.username,
        realm: &lookup.realm,
        client: lookup.client,
        transport: lookup.transport,
    };
    let body = serde_json::to_vec(&question).unwrap_or_default();
    match endpoint.post(body, MAX_ANSWER).await {
        Ok((status, body)) => {
            answer::read(status, &body, &lookup.username, &lookup.realm).map_err(Failure::Unusable)
        }
        Err(PostError::Timeout(_)) => Err(Failure::Timeout),
        Err(PostError::TooLong { .. }) => Err(Failure::Unusable(Unusable::Invalid)),
        Err(PostError::Failed(e)) => Err(Failure::Unreachable(e)),
    }
}
