//! CORS and the WebSocket `Origin` allowlist, from one reloadable policy.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use chorus_protocol::ErrorCode;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::OriginPolicy;
use crate::error::ApiError;
use crate::state::AppState;

/// Browsers send `Origin` on upgrades; a page from a foreign origin must not
/// open a socket with the user's credentials. Non-browser clients send none.
pub fn check_upgrade_origin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if app.origins().allows(origin, host) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, format!("origin `{origin}` is not allowed")))
    }
}

/// CORS answering from the current policy on every request.
pub fn cors(policy: watch::Receiver<OriginPolicy>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, parts| {
            let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok());
            origin.to_str().is_ok_and(|o| policy.borrow().allows(o, host))
        }))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("x-api-key"), header::HeaderName::from_static("x-request-id"), header::HeaderName::from_static("idempotency-key"), header::HeaderName::from_static("last-event-id")])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}
