//! Request ids, request logging, HTTP metrics and error rendering: the
//! outermost middleware every request passes through.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chorus_protocol::ErrorObject;
use tracing::Instrument;

use crate::error::{ApiError, code_for_status};
use crate::state::AppState;

pub const HEADER: &str = "x-request-id";

/// The id of the request being served; also in the `x-request-id` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The matched route, stashed by an inner layer for the outer one.
#[derive(Debug, Clone)]
struct RouteLabel(String);

fn accept_client_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| s.to_owned())
}

/// Inner layer (`route_layer`): remembers which route matched.
pub async fn stash_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let mut res = next.run(req).await;
    if let Some(route) = route {
        res.extensions_mut().insert(RouteLabel(route));
    }
    res
}

/// Outer layer: assigns the request id, opens the request span, renders
/// errors as the standard object, logs the request and counts it.
pub async fn outermost(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req.headers().get(HEADER).and_then(accept_client_id).unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let request_id = RequestId(Arc::from(id.as_str()));
    req.extensions_mut().insert(request_id.clone());
    let method = req.method().clone();
    // The path only: query strings may carry tokens and never reach a log.
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("http", request_id = %id, method = %method, path = %path);
    let started = Instant::now();
    // A panicking handler answers 500 (counted, logged in the request's span);
    // the connection and the server go on.
    let served = chorus_core::supervise::catch_panic(app.hub().metrics(), "http", next.run(req)).instrument(span.clone()).await;
    let mut res = served.unwrap_or_else(|| ApiError::new(chorus_protocol::ErrorCode::Internal, "internal error").into_response());

    let status = res.status();
    if (status.is_client_error() || status.is_server_error()) && needs_rendering(&res) {
        res = render_error(res, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, v);
    }
    let route = res.extensions().get::<RouteLabel>().map_or("unmatched", |r| r.0.as_str()).to_owned();
    let elapsed = started.elapsed();
    app.http_metrics().observe(&route, method.as_str(), status.as_u16(), elapsed);
    if let Some(err) = res.extensions().get::<ApiError>() {
        app.hub().metrics().error(&format!("http:{route}"), err.code.as_str());
    }
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, route, "request");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, route, "request");
        }
    });
    res
}

/// Our handlers' errors travel as [`ApiError`]; bodies from axum or tower
/// layers are plain text. A JSON body with an error status is already in its
/// final form (e.g. a command reply carrying the standard error object).
fn needs_rendering(res: &Response) -> bool {
    if res.extensions().get::<ApiError>().is_some() {
        return true;
    }
    let json = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    !json
}

async fn render_error(res: Response, request_id: &str) -> Response {
    let (mut parts, body) = res.into_parts();
    let (code, message) = match parts.extensions.get::<ApiError>() {
        Some(e) => (e.code, e.message.clone()),
        None => {
            // Something outside our handlers answered (router, body limit): keep its text as the message.
            let text = match http_body_util::BodyExt::collect(body).await {
                Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_owned(),
                Err(_) => String::new(),
            };
            let code = code_for_status(parts.status);
            let message = if text.is_empty() { parts.status.canonical_reason().unwrap_or("error").to_owned() } else { text };
            (code, message)
        }
    };
    let body = ErrorObject::new(code, message, request_id).to_json();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
