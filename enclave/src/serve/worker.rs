//! The engine worker: one thread owns the model and runs every admitted
//! request in one continuous batch ([`ciel_engine::scheduler`]): requests
//! join at any step and leave as they finish. Requests beyond the batch (or
//! beyond the K/V memory) wait in a bounded queue; a full queue is refused
//! at once (HTTP 429) rather than letting latency grow without bound. Each
//! request gets its own event channel, so concurrent clients each receive
//! exactly their own answer.

use ciel_engine::generate::{Completion, Finish, GenerateError, Released, Request};
use ciel_engine::logprobs::TokenLogprob;
use ciel_engine::scheduler::{Batched, Limits, Scheduler, Sink, Stats};
use ciel_engine::tokenizer::Tokenizer;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    stats: Arc<Mutex<Stats>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the prompt: only its size.
        f.debug_struct("Job")
            .field("prompt_tokens", &self.request.prompt.len())
            .finish_non_exhaustive()
    }
}

/// One request's channel back to its client.
struct Client {
    events: UnboundedSender<Event>,
    started: Instant,
    prompt_tokens: usize,
}

impl Sink for Client {
    fn wanted(&self) -> bool {
        // A client that went away (its receiver dropped), even while its
        // request waited, ends it at the next step: no compute is spent on
        // answers nobody reads.
        !self.events.is_closed()
    }

    fn text(&mut self, r: Released<'_>) {
        let _ = self.events.send(Event::Text {
            text: r.text.to_string(),
            logprobs: r.logprobs.to_vec(),
        });
    }

    fn done(&mut self, result: Result<Completion, GenerateError>) {
        let ms = self.started.elapsed().as_millis() as u64;
        // (Nobody receives it if the client has gone.)
        let _ = match result {
            Ok(done) => {
                tracing::info!(
                    prompt_tokens = done.prompt_tokens,
                    completion_tokens = done.ids.len(),
                    ms,
                    abandoned = done.finish == Finish::Abandoned,
                    "request done"
                );
                self.events.send(Event::Done(done))
            }
            Err(e) => {
                tracing::warn!(error = %e, prompt_tokens = self.prompt_tokens, ms, "request failed");
                self.events.send(Event::Failed(e.to_string()))
            }
        };
    }
}

/// How often the worker logs the batch's state while it runs.
const STATS_EVERY: Duration = Duration::from_secs(10);

impl Worker {
    /// Starts the worker thread: batches within `limits`, with room for
    /// `queue` requests waiting beyond them.
    pub fn spawn<M: Batched + Send + 'static>(
        model: M,
        tokenizer: Arc<Tokenizer>,
        limits: Limits,
        queue: usize,
    ) -> std::io::Result<Self> {
        let scheduler = Scheduler::new(limits)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let stats = Arc::new(Mutex::new(scheduler.stats()));
        let (tk, shared) = (tokenizer.clone(), stats.clone());
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || run(model, scheduler, rx, &tk, &shared))?;
        Ok(Worker {
            jobs,
            tokenizer,
            context: limits.context,
            stats,
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

    /// The batch's state after the last step.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

/// The engine thread: takes jobs while the batch has room, runs a step,
/// again. A panic in the engine leaves the model in an unknown state, so
/// the worker stops: it closes the queue before answering, so that once a
/// client has seen the failure every later request is refused as
/// [`Busy::Stopped`].
fn run<M: Batched>(
    mut model: M,
    mut scheduler: Scheduler<Client>,
    rx: Receiver<Job>,
    tokenizer: &Tokenizer,
    stats: &Mutex<Stats>,
) {
    let submit = |s: &mut Scheduler<Client>, job: Job| {
        let client = Client {
            prompt_tokens: job.request.prompt.len(),
            events: job.events,
            started: Instant::now(),
        };
        s.submit(job.request, client);
    };
    let mut logged = Instant::now();
    loop {
        if scheduler.is_idle() {
            match rx.recv() {
                Ok(job) => submit(&mut scheduler, job),
                Err(_) => return,
            }
        }
        while scheduler.has_room() {
            match rx.try_recv() {
                Ok(job) => submit(&mut scheduler, job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if scheduler.is_idle() => return,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scheduler.step(&mut model, tokenizer)
        }));
        if stepped.is_err() {
            drop(rx);
            tracing::error!("the engine panicked; no further requests will run");
            scheduler.fail_all("the engine stopped");
            return;
        }
        let now = scheduler.stats();
        if let Ok(mut s) = stats.lock() {
            *s = now;
        }
        if logged.elapsed() >= STATS_EVERY && !scheduler.is_idle() {
            logged = Instant::now();
            tracing::info!(
                running = now.running,
                waiting = now.waiting,
                kv_blocks_held = now.blocks_held,
                kv_blocks = now.kv_blocks,
                prefix_hit_tokens = now.prefix_hits,
                preemptions = now.preemptions,
                "batch"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ciel_engine::model::ModelError;
    use ciel_engine::testing::{Script, tokenizer};
    use ciel_engine::transformer::Feed;

    /// A scripted model that sleeps in each pass (so that requests pile
    /// up) and counts its passes.
    struct Slow(Script, Duration, Arc<std::sync::atomic::AtomicUsize>);

    impl Batched for Slow {
        fn step(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(self.1);
            self.0.step(feeds)
        }
    }

    fn slow(script: Vec<u32>, ms: u64) -> (Slow, Arc<std::sync::atomic::AtomicUsize>) {
        let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let script = Script {
            tokens: script,
            at: 0,
            vocab: 7,
        };
        (
            Slow(script, Duration::from_millis(ms), passes.clone()),
            passes,
        )
    }

    fn limits(max_batch: usize, context: usize) -> Limits {
        Limits {
            max_batch,
            step_tokens: max_batch + 64,
            kv_blocks: context.div_ceil(16) * 4,
            context,
            prefix_cache: true,
        }
    }

    fn request(max_tokens: usize) -> Request {
        Request {
            prompt: vec![1],
            max_tokens,
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
        let (model, _) = slow(vec![1, 2, 3, 1, 2, 3], 40);
        // A batch of one: the second request waits in the queue of one.
        let w = Worker::spawn(model, Arc::new(tokenizer()), limits(1, 64), 1).unwrap();
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

    #[tokio::test]
    async fn concurrent_requests_run_in_the_same_passes() {
        let (model, passes) = slow([1, 2, 3].repeat(10), 20);
        let w = Worker::spawn(model, Arc::new(tokenizer()), limits(8, 64), 8).unwrap();
        let all: Vec<_> = (0..8).map(|_| w.submit(request(12)).unwrap()).collect();
        for rx in all {
            assert_eq!(text_of(rx, "").await, "abcabcabcabc");
        }
        // One at a time would take 8 × 12 passes; joining one per pass,
        // 12 + 7; all joining at the next pass, 12 or 13 (the first request
        // may start a pass alone before the rest arrive).
        let used = passes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(used <= 16, "{used} passes for 8 requests of 12 tokens");
        // The stats follow the step that answered (published just after).
        let mut held = w.stats().blocks_held;
        for _ in 0..100 {
            if held == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            held = w.stats().blocks_held;
        }
        assert_eq!(held, 0, "blocks still held once every request is done");
    }

    #[tokio::test]
    async fn a_client_that_leaves_stops_its_request() {
        // Far more than the test waits for: only leaving stops it.
        let (model, passes) = slow([1, 2, 3].repeat(700), 5);
        let w = Worker::spawn(model, Arc::new(tokenizer()), limits(4, 4096), 4).unwrap();
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

    impl Batched for Dead {
        fn step(&mut self, _feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
            panic!("engine died")
        }
    }

    #[tokio::test]
    async fn a_dead_engine_is_not_reported_as_a_full_queue() {
        let w = Worker::spawn(Dead, Arc::new(tokenizer()), limits(4, 64), 4).unwrap();
        let mut first = w.submit(request(1)).unwrap();
        // The engine panicked: the request is told so, and nothing more is
        // queued behind it.
        match first.recv().await {
            Some(Event::Failed(e)) => assert!(e.ends_with("the engine stopped"), "{e}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(first.recv().await.is_none());
        assert_eq!(w.submit(request(1)).err(), Some(Busy::Stopped));
    }
}
