//! The engine worker: one thread owns the model and runs requests one at a
//! time from a bounded queue. A full queue is refused at once (HTTP 429)
//! rather than letting latency grow without bound; each request gets its
//! own event channel, so concurrent clients each receive exactly their own
//! answer.

use ciel_engine::generate::{Completion, Finish, Logits, Request, generate_while};
use ciel_engine::logprobs::TokenLogprob;
use ciel_engine::tokenizer::Tokenizer;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// What a running request produces, in order: text pieces, then one of
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// Text that became final, with its tokens' log-probabilities when
    /// they were asked for.
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done(Completion),
    Failed(String),
}

struct Job {
    request: Request,
    events: UnboundedSender<Event>,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The queue is full: retry later (HTTP 429).
    Full,
    /// The engine thread has stopped: nothing will run (HTTP 500).
    Stopped,
}

/// A handle to the worker; cheap to clone.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: SyncSender<Job>,
    pub tokenizer: Arc<Tokenizer>,
    pub context: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the prompt: only its size.
        f.debug_struct("Job")
            .field("prompt_tokens", &self.request.prompt.len())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts the worker thread with room for `queue` waiting requests.
    pub fn spawn<M: Logits + Send + 'static>(
        mut model: M,
        tokenizer: Arc<Tokenizer>,
        context: usize,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let tk = tokenizer.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let started = std::time::Instant::now();
                    let events = job.events;
                    // A panic in the engine leaves the model in an unknown
                    // state, so the worker stops. It closes the queue before
                    // answering, so that once a client has seen the failure
                    // every later request is refused as `Stopped`.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        // A client that went away (its receiver dropped),
                        // even while its request waited, ends it at the next
                        // step: no compute is spent on answers nobody reads.
                        generate_while(
                            &mut model,
                            &tk,
                            &job.request,
                            || !events.is_closed(),
                            |r| {
                                let _ = events.send(Event::Text {
                                    text: r.text.to_string(),
                                    logprobs: r.logprobs.to_vec(),
                                });
                            },
                        )
                    }));
                    match result {
                        Ok(Ok(done)) => {
                            tracing::info!(
                                prompt_tokens = done.prompt_tokens,
                                completion_tokens = done.ids.len(),
                                ms = started.elapsed().as_millis() as u64,
                                abandoned = done.finish == Finish::Abandoned,
                                "request done"
                            );
                            // (Nobody receives it if the client has gone.)
                            let _ = events.send(Event::Done(done));
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "request failed");
                            let _ = events.send(Event::Failed(e.to_string()));
                        }
                        Err(_) => {
                            drop(rx);
                            tracing::error!("the engine panicked; no further requests will run");
                            let _ = events.send(Event::Failed("the engine stopped".into()));
                            return;
                        }
                    }
                }
            })?;
        Ok(Worker {
            jobs,
            tokenizer,
            context,
        })
    }

    /// Queues `request`; its events arrive on the returned receiver.
    pub fn submit(&self, request: Request) -> Result<UnboundedReceiver<Event>, Busy> {
        let (events, rx) = unbounded_channel();
        match self.jobs.try_send(Job { request, events }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Busy::Full),
            Err(TrySendError::Disconnected(_)) => Err(Busy::Stopped),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ciel_engine::model::ModelError;
    use ciel_engine::sampling::SamplingParams;
    use ciel_engine::testing::{Script, tokenizer};

    /// A scripted model slow enough that requests pile up.
    struct Slow(Script);

    impl Logits for Slow {
        fn reset(&mut self) {
            self.0.reset();
        }
        fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
            std::thread::sleep(std::time::Duration::from_millis(40));
            self.0.forward(ids)
        }
    }

    fn request(max_tokens: usize) -> Request {
        Request {
            prompt: vec![1],
            max_tokens,
            sampling: SamplingParams::default(),
            stop: vec![],
            logprobs: None,
            ..Request::default()
        }
    }

    /// The whole text of a request whose first pieces, `seen`, were already
    /// received; checks that the pieces add up to the final text.
    async fn text_of(mut rx: UnboundedReceiver<Event>, seen: &str) -> String {
        let mut text = seen.to_string();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text { text: t, .. } => text.push_str(&t),
                Event::Done(done) => {
                    assert_eq!(done.text, text);
                    return text;
                }
                Event::Failed(e) => panic!("{e}"),
            }
        }
        panic!("no Done event")
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_each_request_gets_its_own_answer() {
        let model = Slow(Script {
            tokens: vec![1, 2, 3, 1, 2, 3],
            at: 0,
            vocab: 7,
        });
        let w = Worker::spawn(model, Arc::new(tokenizer()), 64, 1).unwrap();
        let mut first = w.submit(request(5)).unwrap();
        // The first piece of text shows the worker has taken the first job
        // off the queue, which then has room for exactly one more.
        match first.recv().await {
            Some(Event::Text { text, .. }) => assert_eq!(text, "a"),
            other => panic!("expected text, got {other:?}"),
        }
        let second = w.submit(request(2)).unwrap();
        assert_eq!(w.submit(request(1)).err(), Some(Busy::Full));
        assert_eq!(text_of(first, "a").await, "abcab");
        assert_eq!(text_of(second, "").await, "ab");
        // Room again.
        assert_eq!(text_of(w.submit(request(3)).unwrap(), "").await, "abc");
    }

    /// A scripted model that counts its forward passes.
    struct Counted(Script, Arc<std::sync::atomic::AtomicUsize>);

    impl Logits for Counted {
        fn reset(&mut self) {
            self.0.reset();
        }
        fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            self.0.forward(ids)
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_stops_its_request() {
        let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let model = Counted(
            Script {
                // Far more than the test waits for: only leaving stops it.
                tokens: [1, 2, 3].repeat(700),
                at: 0,
                vocab: 7,
            },
            passes.clone(),
        );
        let w = Worker::spawn(model, Arc::new(tokenizer()), 4096, 4).unwrap();
        let mut first = w.submit(request(2000)).unwrap();
        assert!(matches!(first.recv().await, Some(Event::Text { .. })));
        drop(first);
        // The next request runs to its end, so the first one has stopped.
        assert_eq!(text_of(w.submit(request(3)).unwrap(), "").await, "abc");
        let used = passes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            used < 100,
            "{used} forward passes for a client that left after one token"
        );
    }

    /// A model that dies on its first use.
    struct Dead;

    impl Logits for Dead {
        fn reset(&mut self) {}
        fn forward(&mut self, _ids: &[u32]) -> Result<Vec<f32>, ModelError> {
            panic!("engine died")
        }
    }

    #[tokio::test]
    async fn a_dead_engine_is_not_reported_as_a_full_queue() {
        let w = Worker::spawn(Dead, Arc::new(tokenizer()), 64, 4).unwrap();
        let mut first = w.submit(request(1)).unwrap();
        // The engine panicked: the request is told so, and nothing more is
        // queued behind it.
        match first.recv().await {
            Some(Event::Failed(e)) => assert_eq!(e, "the engine stopped"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(first.recv().await.is_none());
        assert_eq!(w.submit(request(1)).err(), Some(Busy::Stopped));
    }
}
