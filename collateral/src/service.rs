//! The host shim's collateral service: the requests AMD KDS, Intel PCS and
//! NVIDIA's RIM service answer (`GET`, same paths) and OCSP (`POST /ocsp`),
//! answered from the cache, fetched from the upstream on a miss, and kept
//! current by a refresher that fetches each item again before its content
//! expires. Served over HTTP to the guest (vsock) and to clients (TCP).
//!
//! An expired item is never served: when its upstream cannot be reached
//! the request fails (502) and names why. A copy still current is served
//! when a refresh fails, and the failure is logged and counted.

use crate::entry::Entry;
use crate::item::Item;
use crate::store::Store;
use crate::upstream::{FetchError, Upstreams};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ciel_attestation::UnixTime;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// OCSP answers kept at most; more are passed on without being kept.
pub const MAX_CACHED_OCSP: usize = 1024;

/// When items are fetched again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// An item whose content states an end is fetched again once this
    /// fraction of its window (fetched → end) is left, in percent.
    pub remaining_percent: u64,
    /// ... or once less than this is left, whichever comes first.
    pub margin: Duration,
    /// Items that state no end (RIMs) are fetched again after this long.
    pub max_age_undated: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            remaining_percent: 25,
            margin: Duration::from_secs(6 * 3600),
            max_age_undated: Duration::from_secs(24 * 3600),
        }
    }
}

impl RefreshPolicy {
    /// Whether `e` is due to be fetched again at `now`.
    pub fn due(&self, e: &Entry, now: UnixTime) -> bool {
        let (now, fetched) = (now.secs(), e.fetched_at.secs());
        match e.not_after {
            Some(end) => {
                let end = end.secs();
                let left = end.saturating_sub(now);
                let window = end.saturating_sub(fetched);
                left < self.margin.as_secs()
                    || left.saturating_mul(100) < window.saturating_mul(self.remaining_percent)
            }
            None => now.saturating_sub(fetched) >= self.max_age_undated.as_secs(),
        }
    }
}

/// The service's counters (Prometheus text through [`Service::render_metrics`]).
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub hits: AtomicU64,
    pub fetched: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub refused: AtomicU64,
    pub refreshed: AtomicU64,
    /// Requests answered with a recent upstream failure, not fetched again.
    pub held_back: AtomicU64,
}

/// How long an upstream's "no such item" (404) is remembered: a guest or
/// client asking again and again for an item that does not exist does not
/// become as many requests to AMD, Intel or NVIDIA.
pub const MISS_HOLD: Duration = Duration::from_secs(300);
/// How long another failed fetch (the upstream down, a malformed answer)
/// holds back the next one for the same item.
pub const FAILURE_HOLD: Duration = Duration::from_secs(30);
/// Most failures remembered (past it, new ones are not, rather than the
/// memory grow with whatever items requests name).
const MAX_HELD: usize = 4096;

/// The cache, its upstreams, and how items are kept current.
#[derive(Debug)]
pub struct Service {
    pub store: Store,
    pub upstreams: Upstreams,
    pub refresh: RefreshPolicy,
    pub metrics: ServiceMetrics,
    /// One fetch at a time per item: concurrent misses wait for it.
    inflight: tokio::sync::Mutex<HashMap<Item, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent upstream failures by item: until when, and what failed.
    held: std::sync::Mutex<HashMap<Item, (u64, String)>>,
    /// The clock (tests move it).
    now: fn() -> UnixTime,
}

fn system_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// Why a request was not answered.
#[derive(Debug)]
enum Refusal {
    BadRequest(String),
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, m + "\n").into_response(),
            Refusal::Unavailable(m) => (StatusCode::BAD_GATEWAY, m + "\n").into_response(),
        }
    }
}

impl Service {
    pub fn new(store: Store, upstreams: Upstreams, refresh: RefreshPolicy) -> Service {
        Service::with_clock(store, upstreams, refresh, system_now)
    }

    /// As [`Service::new`], reading the time from `now`.
    pub fn with_clock(
        store: Store,
        upstreams: Upstreams,
        refresh: RefreshPolicy,
        now: fn() -> UnixTime,
    ) -> Service {
        Service {
            store,
            upstreams,
            refresh,
            metrics: ServiceMetrics::default(),
            inflight: tokio::sync::Mutex::default(),
            held: std::sync::Mutex::default(),
            now,
        }
    }

    /// The item, from the cache when it holds a current copy, else fetched.
    pub async fn get(
        self: &Arc<Self>,
        item: Item,
        ocsp_request: Option<Vec<u8>>,
    ) -> Result<Entry, String> {
        let now = (self.now)();
        if let Some(e) = self.store.get(&item).filter(|e| !e.expired(now)) {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e);
        }
        let lock = {
            let mut map = self.inflight.lock().await;
            map.entry(item.clone()).or_default().clone()
        };
        let _one = lock.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(e) = self.store.get(&item).filter(|e| !e.expired((self.now)())) {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e);
        }
        if let Some(why) = self.held_back(&item) {
            self.inflight.lock().await.remove(&item);
            self.metrics.held_back.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        let fetched = self.fetch(&item, ocsp_request).await;
        self.inflight.lock().await.remove(&item);
        let e = fetched.map_err(|e| {
            let hold = match e {
                FetchError::NotConfigured(_) => {
                    return format!("{e}, and the cache has no current {item}");
                }
                FetchError::NotFound { .. } => MISS_HOLD,
                _ => FAILURE_HOLD,
            };
            let why = format!("{item}: {e}");
            self.hold(&item, hold, &why);
            why
        })?;
        self.metrics.fetched.fetch_add(1, Ordering::Relaxed);
        Ok(e)
    }

    /// A failure of `item`'s upstream still held, as the answer to give.
    fn held_back(&self, item: &Item) -> Option<String> {
        let now = (self.now)().0;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(item) {
            Some((until, why)) if *until > now => Some(format!(
                "{why} (not asked upstream again for {}s)",
                until - now
            )),
            Some(_) => {
                held.remove(item);
                None
            }
            None => None,
        }
    }

    fn hold(&self, item: &Item, hold: Duration, why: &str) {
        let now = (self.now)().0;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_HELD {
            held.retain(|_, (until, _)| *until > now);
        }
        if held.len() < MAX_HELD {
            held.insert(
                item.clone(),
                (now.saturating_add(hold.as_secs()), why.to_string()),
            );
        }
    }

    async fn fetch(
        self: &Arc<Self>,
        item: &Item,
        ocsp_request: Option<Vec<u8>>,
    ) -> Result<Entry, FetchError> {
        let me = self.clone();
        let item = item.clone();
        let r = tokio::task::spawn_blocking(move || {
            let e = me
                .upstreams
                .fetch(&item, ocsp_request.as_deref(), (me.now)())?;
            // OCSP answers are per request, and anyone who can reach the
            // service chooses the requests: past a bound they are passed
            // on, not kept (the cache cannot be grown without limit).
            if matches!(item, Item::NvidiaOcsp { .. })
                && me.store.count(item.kind()) >= MAX_CACHED_OCSP
            {
                return Ok(e);
            }
            me.store.put(e.clone()).map_err(|err| FetchError::Failed {
                url: item.to_string(),
                message: err.to_string(),
            })?;
            Ok(e)
        })
        .await
        .unwrap_or_else(|e| {
            Err(FetchError::Failed {
                url: String::new(),
                message: format!("fetch task: {e}"),
            })
        });
        if let Err(e) = &r {
            self.metrics.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "collateral upstream");
        }
        r
    }

    /// Fetches every item that is due again (not OCSP responses, which are
    /// made per request and fetched when asked for). Returns how many were
    /// refreshed and how many failed.
    pub async fn refresh_due(self: &Arc<Self>) -> (usize, usize) {
        let now = (self.now)();
        let due: Vec<Item> = self
            .store
            .entries()
            .into_iter()
            .filter(|e| !matches!(e.item, Item::NvidiaOcsp { .. }) && self.refresh.due(e, now))
            .map(|e| e.item)
            .collect();
        let (mut ok, mut failed) = (0, 0);
        for item in due {
            match self.fetch(&item, None).await {
                Ok(_) => {
                    ok += 1;
                    self.metrics.refreshed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%item, "collateral refreshed");
                }
                Err(_) => failed += 1,
            }
        }
        (ok, failed)
    }

    /// Refreshes what is due every `every`, for ever.
    pub async fn refresh_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.refresh_due().await;
        }
    }

    /// The routes: `GET` any item's upstream path, `POST /ocsp`, `GET /metrics`.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/ocsp", axum::routing::post(ocsp))
            .route("/metrics", axum::routing::get(metrics))
            .fallback(get_item)
            .with_state(self)
    }

    /// The counters and the cache's size, in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let series = [
            (
                "ciel_collateral_cache_hits_total",
                "Requests answered from the cache.",
                get(&m.hits),
            ),
            (
                "ciel_collateral_fetched_total",
                "Items fetched from an upstream on a request.",
                get(&m.fetched),
            ),
            (
                "ciel_collateral_refreshed_total",
                "Items fetched again before they expired.",
                get(&m.refreshed),
            ),
            (
                "ciel_collateral_upstream_errors_total",
                "Fetches that failed.",
                get(&m.upstream_errors),
            ),
            (
                "ciel_collateral_refused_total",
                "Requests that named no item.",
                get(&m.refused),
            ),
            (
                "ciel_collateral_held_back_total",
                "Requests answered with a recent upstream failure, not fetched again.",
                get(&m.held_back),
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in series {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP ciel_collateral_cached_items Items in the cache.\n# TYPE ciel_collateral_cached_items gauge\nciel_collateral_cached_items {}\n",
            self.store.entries().len()
        ));
        out
    }
}

fn content_type(item: &Item) -> &'static str {
    match item {
        Item::AmdVcek { .. } => "application/pkix-cert",
        Item::AmdChain { .. } => "application/x-pem-file",
        Item::AmdCrl { .. } | Item::IntelPckCrl { .. } | Item::IntelRootCaCrl => {
            "application/pkix-crl"
        }
        Item::IntelTcbInfo { .. } | Item::IntelQeIdentity { .. } | Item::NvidiaRim { .. } => {
            "application/json"
        }
        Item::NvidiaOcsp { .. } => "application/ocsp-response",
    }
}

fn answer(e: Entry) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&e.item)),
    );
    for (k, v) in &e.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&e.fetched_at.secs().to_string()) {
        headers.insert("x-ciel-fetched-at", v);
    }
    (headers, e.body).into_response()
}

async fn get_item(
    State(svc): State<Arc<Service>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    if method != axum::http::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method}: items are fetched with GET (OCSP: POST /ocsp)\n"),
        )
            .into_response();
    }
    let item = match Item::from_get(uri.path(), uri.query()) {
        Ok(i) => i,
        Err(e) => {
            svc.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return Refusal::BadRequest(e.0).into_response();
        }
    };
    match svc.get(item, None).await {
        Ok(e) => answer(e),
        Err(m) => Refusal::Unavailable(m).into_response(),
    }
}

async fn ocsp(State(svc): State<Arc<Service>>, body: Bytes) -> Response {
    if body.is_empty() {
        svc.metrics.refused.fetch_add(1, Ordering::Relaxed);
        return Refusal::BadRequest("POST /ocsp: the body is the DER OCSP request".into())
            .into_response();
    }
    let item = Item::ocsp(&body);
    match svc.get(item, Some(body.to_vec())).await {
        Ok(e) => answer(e),
        Err(m) => Refusal::Unavailable(m).into_response(),
    }
}

async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        svc.render_metrics(),
    )
        .into_response()
}
