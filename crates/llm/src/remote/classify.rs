//! genai's errors as [`ProviderError`]s: HTTP statuses (with `Retry-After`),
//! connection failures, malformed chunks and in-stream error events.

use std::time::Duration;

use genai::Error as GenaiError;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::ProviderError;
use crate::secret::ApiKey;

/// Longest provider message we keep in an error.
const MESSAGE_EXCERPT_CHARS: usize = 200;

/// Removes the provider's API key from text that came back from it (some
/// providers echo a part of a wrong key in their 401 body).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    key: Option<ApiKey>,
}

impl Redactor {
    pub(crate) fn new(key: Option<&ApiKey>) -> Self {
        Redactor { key: key.cloned() }
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Some(key) = self
            .key
            .as_ref()
            .map(ApiKey::expose)
            .filter(|k| !k.is_empty())
        {
            text = text.replace(key, "[redacted]");
            // A key's tail is how providers usually echo a wrong key.
            if key.len() >= 8 {
                text = text.replace(&key[key.len() - 4..], "****");
            }
        }
        text.chars().take(MESSAGE_EXCERPT_CHARS).collect()
    }
}

pub(crate) fn error(error: &GenaiError, redactor: &Redactor) -> ProviderError {
    if let (Some(status), body) = (error.status(), http_body(error)) {
        return from_status(status, error.headers(), &body, redactor);
    }
    match error {
        GenaiError::WebStream { error: inner, .. } => from_boxed(inner.as_ref(), redactor),
        GenaiError::WebModelCall { webc_error, .. }
        | GenaiError::WebAdapterCall { webc_error, .. } => match webc_error {
            genai::webc::Error::Reqwest(e) => from_reqwest(e),
            other => ProviderError::Malformed(redactor.clean(&other.to_string())),
        },
        GenaiError::StreamParse { serde_error, .. } => {
            ProviderError::Malformed(serde_error.to_string())
        }
        GenaiError::JsonValueExt(e) => ProviderError::Malformed(e.to_string()),
        GenaiError::SerdeJson(e) => ProviderError::Malformed(e.to_string()),
        GenaiError::InvalidJsonResponseElement { info } => {
            ProviderError::Malformed((*info).to_owned())
        }
        GenaiError::ChatResponse { body, .. } => from_error_event(body, redactor),
        GenaiError::RequiresApiKey { .. }
        | GenaiError::NoAuthData { .. }
        | GenaiError::NoAuthResolver { .. } => ProviderError::Config("no API key".into()),
        other => ProviderError::Config(redactor.clean(&other.to_string())),
    }
}

fn http_body(error: &GenaiError) -> String {
    match error {
        GenaiError::HttpError { body, .. } => body.clone(),
        GenaiError::WebModelCall {
            webc_error: genai::webc::Error::ResponseFailedStatus { body, .. },
            ..
        } => body.clone(),
        _ => String::new(),
    }
}

/// A failure inside genai's stream: the boxed cause is a genai error (an HTTP
/// status), a reqwest error (connection, body) or a decoding error.
fn from_boxed(
    inner: &(dyn std::error::Error + Send + Sync + 'static),
    redactor: &Redactor,
) -> ProviderError {
    if let Some(e) = inner.downcast_ref::<GenaiError>() {
        return error(e, redactor);
    }
    if let Some(e) = inner.downcast_ref::<reqwest::Error>() {
        return from_reqwest(e);
    }
    ProviderError::Malformed(redactor.clean(&inner.to_string()))
}

fn from_reqwest(e: &reqwest::Error) -> ProviderError {
    if e.is_body() || e.is_decode() {
        // The connection broke while the answer was arriving.
        ProviderError::Interrupted
    } else {
        ProviderError::Connection(reqwest_message(e))
    }
}

/// reqwest's message with its causes, without the URL (it never holds
/// headers, but a URL may carry a query we do not want in logs).
fn reqwest_message(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<provider>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn from_status(
    status: StatusCode,
    headers: Option<&HeaderMap>,
    body: &str,
    redactor: &Redactor,
) -> ProviderError {
    let retry_after = headers.and_then(retry_after);
    let message = redactor.clean(&body_message(body));
    let code = status.as_u16();
    match code {
        429 => ProviderError::RateLimited { retry_after },
        401 | 403 => ProviderError::Auth { status: code },
        408 | 500..=599 => ProviderError::Server {
            status: code,
            retry_after,
            message,
        },
        _ if mentions_context_length(body) => ProviderError::ContextLength(message),
        _ => ProviderError::Rejected {
            status: code,
            message,
        },
    }
}

/// `Retry-After` in seconds (or OpenAI's `retry-after-ms`).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The human part of a provider's error body: `error.message`, `message`, or the text.
fn body_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => value_message(&value).unwrap_or_else(|| body.to_owned()),
        Err(_) => body.to_owned(),
    }
}

fn value_message(value: &Value) -> Option<String> {
    let value = match value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    value
        .pointer("/error/message")
        .or_else(|| value.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn mentions_context_length(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "context_length",
        "context length",
        "context window",
        "prompt is too long",
        "input token count",
        "too many tokens",
        "maximum context",
    ]
    .iter()
    .any(|hint| text.contains(hint))
}

/// An error reported inside a stream (OpenAI `{"error":…}`, Anthropic
/// `event: error`).
fn from_error_event(body: &Value, redactor: &Redactor) -> ProviderError {
    let kind = body
        .pointer("/error/type")
        .or_else(|| body.get("type"))
        .or_else(|| body.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message = value_message(body).unwrap_or_else(|| body.to_string());
    if kind.contains("rate_limit") {
        return ProviderError::RateLimited { retry_after: None };
    }
    if mentions_context_length(&message) || kind.contains("context_length") {
        return ProviderError::ContextLength(redactor.clean(&message));
    }
    let overloaded =
        kind.contains("overloaded") || kind.contains("server_error") || kind == "api_error";
    ProviderError::Stream {
        message: redactor.clean(&message),
        overloaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_map_to_codes_and_keep_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let r = Redactor::default();
        assert_eq!(
            from_status(StatusCode::TOO_MANY_REQUESTS, Some(&headers), "", &r),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            from_status(StatusCode::from_u16(529).unwrap(), None, "{}", &r).code(),
            "provider_error"
        );
        assert!(from_status(StatusCode::from_u16(529).unwrap(), None, "{}", &r).is_retryable());
        assert_eq!(
            from_status(StatusCode::UNAUTHORIZED, None, "", &r).code(),
            "auth"
        );
        let too_long = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
        assert_eq!(
            from_status(StatusCode::BAD_REQUEST, None, too_long, &r).code(),
            "context_length"
        );
        assert!(!from_status(StatusCode::BAD_REQUEST, None, "nope", &r).is_retryable());
    }

    #[test]
    fn the_key_never_survives_in_a_message() {
        let key = ApiKey::new("sk-test-abcdef123456");
        let r = Redactor::new(Some(&key));
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-test-abcdef123456 (ends in 3456)"}}"#;
        let error = from_status(StatusCode::BAD_REQUEST, None, body, &r);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("abcdef123456"), "{shown}");
        assert!(!shown.contains("3456"), "{shown}");
    }
}
