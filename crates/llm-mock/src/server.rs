//! The axum server: one route per provider API, scripted replies, request
//! recording, and a body that notices when the client hangs up.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::script::{Reply, Script};
use crate::wire::Wire;

/// Whether the server keeps every request (tests) or none (benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    All,
    Off,
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub wire: Wire,
    /// Path and query, e.g. `/v1beta/models/m:streamGenerateContent?alt=sse`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct MockOptions {
    pub bind: SocketAddr,
    /// The reply when no scripted one is queued.
    pub default: Script,
    pub recording: Recording,
    /// Requests kept; past it the oldest are dropped (a long test or soak
    /// should not grow without bound).
    pub max_recorded: usize,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            default: Script::text("Hello from the mock provider."),
            recording: Recording::All,
            max_recorded: 10_000,
        }
    }
}

pub(crate) struct Shared {
    scripts: Mutex<VecDeque<Script>>,
    default: Script,
    recording: Recording,
    max_recorded: usize,
    requests: Mutex<VecDeque<RecordedRequest>>,
    /// The default answer's frames by wire, model and usage flag.
    default_frames: Mutex<HashMap<FrameKey, Arc<[Bytes]>>>,
    hangups: AtomicUsize,
    completed: AtomicUsize,
    changed: Notify,
}

/// A running mock provider on a loopback port. Stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts on `127.0.0.1:0`, recording requests.
    pub async fn start() -> std::io::Result<MockServer> {
        MockServer::start_with(MockOptions::default()).await
    }

    pub async fn start_with(options: MockOptions) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            scripts: Mutex::new(VecDeque::new()),
            default: options.default,
            recording: options.recording,
            max_recorded: options.max_recorded,
            requests: Mutex::new(VecDeque::new()),
            default_frames: Mutex::new(HashMap::new()),
            hangups: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            // Ends only when aborted; a failing accept loop ends the mock.
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockServer { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client of `wire` is configured with.
    pub fn base_url(&self, wire: Wire) -> String {
        match wire {
            Wire::OpenAi | Wire::Anthropic => format!("http://{}/v1/", self.addr),
            Wire::Gemini => format!("http://{}/v1beta/", self.addr),
        }
    }

    /// Queues the reply to the next request (first in, first out).
    pub fn push(&self, script: Script) {
        lock(&self.shared.scripts).push_back(script);
    }

    /// Queues the same reply for the next `times` requests.
    pub fn push_times(&self, times: usize, script: Script) {
        let mut scripts = lock(&self.shared.scripts);
        for _ in 0..times {
            scripts.push_back(script.clone());
        }
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    /// Streams whose client went away before the last frame.
    pub fn hangups(&self) -> usize {
        self.shared.hangups.load(Ordering::SeqCst)
    }

    /// Streams sent to the end.
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Resolves once `count` clients have hung up.
    pub async fn wait_for_hangups(&self, count: usize) {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.hangups() >= count {
                return;
            }
            notified.await;
        }
    }
}

/// Which rendering of the default answer: wire, model, usage asked for.
type FrameKey = (Wire, String, bool);

/// Distinct (wire, model, usage flag) renderings kept; past it the cache starts over.
const DEFAULT_FRAME_CACHE: usize = 64;

impl Shared {
    fn default_frames(
        &self,
        wire: Wire,
        model: &str,
        request: &Value,
        turn: &crate::script::Turn,
    ) -> Arc<[Bytes]> {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let key = (wire, model.to_owned(), include_usage);
        if let Some(frames) = lock(&self.default_frames).get(&key) {
            return Arc::clone(frames);
        }
        let frames: Arc<[Bytes]> = wire.frames(turn, model, request).into();
        let mut cache = lock(&self.default_frames);
        if cache.len() >= DEFAULT_FRAME_CACHE {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&frames));
        frames
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding it leaves usable data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{model_action}", post(gemini))
        .with_state(shared)
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        shared,
        Wire::OpenAi,
        "/v1/chat/completions".into(),
        None,
        headers,
        body,
    )
    .await
}

async fn anthropic(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        shared,
        Wire::Anthropic,
        "/v1/messages".into(),
        None,
        headers,
        body,
    )
    .await
}

async fn gemini(
    State(shared): State<Arc<Shared>>,
    Path(model_action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, "streamGenerateContent")) = model_action.split_once(':') else {
        return (
            StatusCode::NOT_FOUND,
            "only :streamGenerateContent is mocked",
        )
            .into_response();
    };
    let path = format!(
        "/v1beta/models/{model_action}?{}",
        query.unwrap_or_default()
    );
    let model = model.to_owned();
    handle(shared, Wire::Gemini, path, Some(model), headers, body).await
}

async fn handle(
    shared: Arc<Shared>,
    wire: Wire,
    path: String,
    model: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, wire.error_body(400)).into_response();
    };
    let model = model
        .or_else(|| {
            request
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let scripted = lock(&shared.scripts).pop_front();
    let frames: Arc<[Bytes]> = match (&scripted, &shared.default.reply) {
        (
            Some(Script {
                reply: Reply::Stream(turn),
                ..
            }),
            _,
        ) => wire.frames(turn, &model, &request).into(),
        (Some(_), _) => Arc::from(Vec::new()),
        // The default answer is rendered once per wire, model and usage flag:
        // a benchmark's thousands of streams share the same frames.
        (None, Reply::Stream(turn)) => shared.default_frames(wire, &model, &request, turn),
        (None, Reply::Status { .. }) => Arc::from(Vec::new()),
    };
    let script = scripted.unwrap_or_else(|| shared.default.clone());
    if shared.recording == Recording::All {
        let mut requests = lock(&shared.requests);
        if requests.len() >= shared.max_recorded {
            requests.pop_front();
        }
        if shared.max_recorded > 0 {
            requests.push_back(RecordedRequest {
                wire,
                path,
                headers,
                body: request,
            });
        }
    }
    // A client that leaves before the headers also hung up.
    let waiting = HeadersGuard {
        shared: Arc::clone(&shared),
        armed: true,
    };
    if !script.header_delay.is_zero() {
        tokio::time::sleep(script.header_delay).await;
    }
    waiting.disarm();
    if let Reply::Status {
        status,
        retry_after,
        body,
    } = &script.reply
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = body
            .clone()
            .unwrap_or_else(|| wire.error_body(status.as_u16()));
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*seconds));
        }
        return response;
    }
    let (frames, stall) = apply_faults(&script, wire, frames);
    let body = TrackedBody {
        frames,
        next: 0,
        delay: script.chunk_delay,
        next_at: None,
        stall,
        shared,
        ended: false,
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The frames after the script's faults, and whether to stall after them.
fn apply_faults(script: &Script, wire: Wire, frames: Arc<[Bytes]>) -> (Arc<[Bytes]>, bool) {
    let faulty = script.malformed_at.is_some()
        || script.error_after.is_some()
        || script.close_after.is_some()
        || script.stall_after.is_some();
    if !faulty {
        return (frames, false);
    }
    let mut frames = frames.to_vec();
    if let Some(index) = script.malformed_at
        && index < frames.len()
    {
        frames[index] = wire.malformed_frame();
    }
    if let Some(count) = script.error_after {
        frames.truncate(count);
        frames.push(wire.error_frame());
    }
    if let Some(count) = script.close_after {
        frames.truncate(count);
    }
    let stall = match script.stall_after {
        Some(count) if count < frames.len() => {
            frames.truncate(count);
            true
        }
        _ => false,
    };
    (frames.into(), stall)
}

/// Counts a hang-up if the handler is dropped while holding the headers back.
struct HeadersGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl HeadersGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HeadersGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.hangups.fetch_add(1, Ordering::SeqCst);
            self.shared.changed.notify_waiters();
        }
    }
}

/// The frames of one stream, paced, counting a client that leaves early.
struct TrackedBody {
    /// Shared between streams of the same default answer.
    frames: Arc<[Bytes]>,
    next: usize,
    delay: Duration,
    /// When the next frame is due; one timer reused for the whole stream.
    next_at: Option<Pin<Box<Sleep>>>,
    /// After the last frame, stay open and silent.
    stall: bool,
    shared: Arc<Shared>,
    ended: bool,
}

impl Stream for TrackedBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(sleep) = this.next_at.as_mut()
            && sleep.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        match this.frames.get(this.next).cloned() {
            Some(frame) => {
                this.next += 1;
                if !this.delay.is_zero() && this.next < this.frames.len() {
                    // Paced from the previous deadline, so N frames/s holds without drift.
                    match this.next_at.as_mut() {
                        Some(sleep) => {
                            let next = sleep.deadline() + this.delay;
                            sleep.as_mut().reset(next);
                        }
                        None => {
                            this.next_at = Some(Box::pin(tokio::time::sleep_until(
                                Instant::now() + this.delay,
                            )))
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // Silent until the client gives up; hyper drops the body then.
            None if this.stall => Poll::Pending,
            None => {
                this.ended = true;
                this.shared.completed.fetch_add(1, Ordering::SeqCst);
                this.shared.changed.notify_waiters();
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.hangups.fetch_add(1, Ordering::SeqCst);
            self.shared.changed.notify_waiters();
        }
    }
}
