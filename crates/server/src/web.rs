//! The web UI: the files under `web/` (the UI, the JavaScript SDK and the
//! vendored browser libraries), embedded in release builds and read from
//! disk in debug builds, served with a strict Content-Security-Policy.
//!
//! Routes: `/` is the UI's page (with `<base href>` set to the configured
//! public path prefix, so every URL the UI builds is relative to it) and
//! `/assets/{ui,sdk,vendor}/…` the files. Nothing here calls anything over
//! the network, at build time or at run time.

use std::borrow::Cow;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use chorus_protocol::ErrorCode;

/// Longest path prefix accepted.
const PREFIX_MAX: usize = 100;

/// `[web]`: the browser UI. Fixed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the UI at `/` and its files under `/assets/`.
    pub enabled: bool,
    /// The path under which browsers reach this server through a reverse
    /// proxy (e.g. `/chorus`), or empty. Requests are accepted with and
    /// without it, so a proxy may strip it or pass it on.
    pub path_prefix: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { enabled: true, path_prefix: String::new() }
    }
}

impl WebConfig {
    /// Checks `path_prefix`: empty, or `/` followed by URL path characters,
    /// without a trailing `/`, `//` or `..`.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.path_prefix;
        if p.is_empty() {
            return Ok(());
        }
        let ok_chars = p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'));
        if !p.starts_with('/') || p.ends_with('/') || p.len() > PREFIX_MAX || !ok_chars || p.contains("//") || p.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "web.path_prefix must be empty or like \"/chorus\": a leading `/`, no trailing `/`, at most {PREFIX_MAX} characters of letters, digits and `/-_.~`"
            ));
        }
        Ok(())
    }
}

/// The files of `web/` a browser may load; tests, `node_modules` and the
/// npm manifest stay out of the binary.
#[derive(RustEmbed)]
#[folder = "../../web/"]
#[include = "ui/**/*.html"]
#[include = "ui/**/*.js"]
#[include = "ui/**/*.css"]
#[include = "ui/**/*.svg"]
#[include = "sdk/**/*.js"]
#[include = "vendor/*.mjs"]
#[include = "vendor/*.js"]
#[include = "vendor/licenses/*.txt"]
#[exclude = "node_modules/**"]
#[exclude = "test/**"]
struct Assets;

/// What the page may do: scripts, styles, images and connections from this
/// origin only; no inline script or style, no `eval`, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The UI's routes (`/`, `/index.html`, `/assets/…`).
pub fn routes<S: Clone + Send + Sync + 'static>(config: &WebConfig) -> Router<S> {
    let prefix = config.path_prefix.clone();
    let index = move || {
        let prefix = prefix.clone();
        async move { page(&prefix) }
    };
    Router::new().route("/", get(index.clone())).route("/index.html", get(index)).route("/assets/{*path}", get(asset))
}

/// Serves `router` at `/` and, when a prefix is set, also under it.
pub fn with_prefix(router: Router, prefix: &str) -> Router {
    if prefix.is_empty() {
        return router;
    }
    Router::new().nest_service(prefix, router.clone()).fallback_service(router)
}

fn page(prefix: &str) -> Response {
    let Some(file) = Assets::get("ui/index.html") else {
        return ApiError::new(ErrorCode::NotFound, "the web UI is not in this build").into_response();
    };
    let text = String::from_utf8_lossy(&file.data);
    // The prefix is validated to URL path characters, so it needs no escaping.
    let html = text.replacen("<base href=\"/\">", &format!("<base href=\"{prefix}/\">"), 1);
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

async fn asset(Path(path): Path<String>, request_headers: HeaderMap) -> Response {
    let allowed = ["ui/", "sdk/", "vendor/"].iter().any(|p| path.starts_with(p));
    let file = if allowed { Assets::get(&path) } else { None };
    let Some(file) = file else {
        return ApiError::new(ErrorCode::NotFound, format!("no such file: /assets/{path}")).into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let fresh = request_headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match file.data {
            Cow::Borrowed(b) => Body::from(b),
            Cow::Owned(v) => Body::from(v),
        };
        let mut r = Response::new(body);
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
        r
    };
    let headers = response.headers_mut();
    // File names carry no version: revalidate each time (a 304 is cheap).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, v);
    }
    secure(headers);
    response
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    headers.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn app(prefix: &str) -> Router {
        let config = WebConfig { enabled: true, path_prefix: prefix.into() };
        with_prefix(routes(&config), prefix)
    }

    async fn get(app: &Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_page_has_a_strict_policy_and_the_prefix_as_its_base() {
        let app = app("/chorus");
        for path in ["/", "/chorus", "/chorus/", "/chorus/index.html"] {
            let (status, headers, body) = get(&app, path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(body.contains("<base href=\"/chorus/\">"), "{path}: {body}");
            let csp = headers.get("content-security-policy").unwrap().to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
            assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        }
        let (_, _, body) = get(&self::app(""), "/", &[]).await;
        assert!(body.contains("<base href=\"/\">"));
    }

    #[tokio::test]
    async fn assets_are_served_with_types_and_revalidated_by_etag() {
        let app = app("/p");
        let (status, headers, body) = get(&app, "/p/assets/sdk/index.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get(CONTENT_TYPE).unwrap(), "text/javascript; charset=utf-8");
        assert!(body.contains("export"));
        let etag = headers.get(ETAG).unwrap().to_str().unwrap().to_owned();
        let (status, _, body) = get(&app, "/assets/sdk/index.js", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        for missing in ["/assets/package.json", "/assets/test/harness.mjs", "/assets/ui/nope.js", "/assets/../Cargo.toml", "/assets/node_modules/typescript/package.json"] {
            // (The standard error body is rendered by the app's outer layer.)
            let (status, headers, _) = get(&app, missing, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
            assert!(headers.get("content-security-policy").is_none(), "{missing}");
        }
    }

    #[test]
    fn prefixes() {
        let ok = |p: &str| WebConfig { enabled: true, path_prefix: p.into() }.validate();
        assert!(ok("").is_ok());
        assert!(ok("/chorus").is_ok());
        assert!(ok("/a/b-c_d.e~").is_ok());
        for bad in ["chorus", "/chorus/", "/", "//x", "/a/../b", "/a/./b", "/a b", "/a\"b", "/<x>"] {
            assert!(ok(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ok(&format!("/{}", "a".repeat(PREFIX_MAX))).is_err());
    }

    #[test]
    fn the_ui_and_its_libraries_are_embedded() {
        for path in ["ui/index.html", "ui/app.js", "sdk/index.js", "sdk/client.js", "vendor/htm-preact-standalone.mjs", "vendor/marked.esm.js", "vendor/purify.es.mjs"] {
            assert!(Assets::get(path).is_some(), "{path} missing");
        }
        assert!(Assets::iter().all(|p| !p.starts_with("test/") && !p.starts_with("node_modules/")));
        assert_eq!(content_type("vendor/purify.es.mjs"), "text/javascript; charset=utf-8");
    }
}
