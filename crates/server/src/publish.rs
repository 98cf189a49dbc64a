//! The server publish API: `POST /api/v1/publish` and `/api/v1/publish/batch`,
//! for backends (e.g. agents that run elsewhere) holding an API key. Events
//! are checked against their type's schema before they are accepted.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use chorus_core::hub::PublishError;
use chorus_core::access::AccessError;
use chorus_core::publication::Draft;
use chorus_protocol::{ChannelName, ErrorCode, ErrorObject, EventType, Payload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::credentials::{ApiPrincipal, KeyRights, api_key};
use chorus_core::limiter::Refusal;
use crate::error::ApiError;
use crate::rest::openapi::ErrorBody;
use crate::extract::parse_json;
use crate::request_id::RequestId;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct PublishItem<'a> {
    pub channel: ChannelName,
    /// Event type; `publication` when absent.
    #[serde(default, borrow)]
    pub event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// Items stay raw until each is parsed on its own, as an object.
#[derive(Debug, Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// The body of `POST /api/v1/publish` (and each batch item), for the document.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PublishBody {
    /// `namespace:id`
    #[schema(example = "room:general")]
    pub channel: String,
    /// An event type marked "server API" in PROTOCOL.md, or `publication` (the default).
    #[schema(example = "agent_thinking")]
    pub event: Option<String>,
    /// A JSON object matching the event type's schema.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchBody {
    /// 1 to `server.publish_batch_max` (1,000) events.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<PublishBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Published {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum ItemResult {
    Ok(Published),
    Err {
        #[schema(value_type = ErrorBody)]
        error: ErrorObject,
    },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    results: Vec<ItemResult>,
}

pub(crate) async fn authorize(app: &AppState, headers: &HeaderMap) -> Result<ApiPrincipal, ApiError> {
    let key = api_key(headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "an API key is required (X-API-Key or Authorization: Bearer)"))?;
    app.api_keys().check(key).await.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown or revoked API key"))
}

/// Events of one batch into one channel before the subscribers' writers get
/// a turn: well under an outbound queue's 50 messages.
const CHANNEL_BURST: usize = 16;

/// How long a client refused by maintenance mode is asked to wait.
const MAINTENANCE_RETRY_SECS: u64 = 5;

/// 503 `maintenance` (with the administrator's message) while maintenance
/// mode is on: publishing creates content. A batch is refused as a whole.
fn check_maintenance(app: &AppState) -> Result<(), ApiError> {
    app.hub().check_maintenance("publishing").map_err(|r| ApiError::new(ErrorCode::Maintenance, r.to_string()).retry_after(MAINTENANCE_RETRY_SECS))
}

/// `POST /api/v1/publish`: one event.
#[utoipa::path(post, path = "/api/v1/publish", tag = "publish", request_body = PublishBody, security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Published", body = Published),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "A user's key publishing where its owner may not read, or outside its scope (PROTOCOL.md, API key scopes)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Unknown event type or data not matching its schema", body = ErrorBody),
        (status = 429, description = "The key's publish rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Maintenance mode (`maintenance`, with `Retry-After`), or the broker is unavailable", body = ErrorBody),
    ))]
pub async fn publish(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Published>, ApiError> {
    let principal = authorize(&app, &headers).await?;
    check_maintenance(&app)?;
    let item: PublishItem<'_> = parse_json(&body)?;
    Ok(Json(publish_one(&app, &principal, item).await?))
}

/// `POST /api/v1/publish/batch`: up to `publish_batch_max` events, published
/// in order; each gets its own result.
#[utoipa::path(post, path = "/api/v1/publish/batch", tag = "publish", request_body = BatchBody, security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "One result per item: a position or an error object (`forbidden` outside the key's rights, `rate_limited` past its publish rate)", body = BatchResponse),
        (status = 400, description = "Malformed body, or no or too many items", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Maintenance mode (`maintenance`, with `Retry-After`): the whole batch is refused", body = ErrorBody),
    ))]
pub async fn publish_batch(
    State(app): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BatchResponse>, ApiError> {
    let principal = authorize(&app, &headers).await?;
    check_maintenance(&app)?;
    let batch: BatchRequest<'_> = parse_json(&body)?;
    let max = app.config().publish_batch_max;
    if batch.items.is_empty() || batch.items.len() > max {
        return Err(ApiError::new(ErrorCode::InvalidField, format!("items: must hold 1 to {max} events")));
    }
    // A malformed item fails the whole request, naming it.
    let items = batch
        .items
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_json::<PublishItem<'_>>(raw.get().as_bytes()).map_err(|e| ApiError::new(e.code, format!("items[{i}].{}", e.message.trim_start_matches("body: ")))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(items.len());
    // Events per channel since the last yield.
    let mut burst: HashMap<ChannelName, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let channel = item.channel.clone();
        results.push(match publish_one(&app, &principal, item).await {
            Ok(p) => ItemResult::Ok(p),
            Err(e) => ItemResult::Err { error: ErrorObject::new(e.code, e.message, format!("{}:{i}", request_id.as_str())) },
        });
        // Many events into one channel in one go would fill its readers'
        // queues (50 messages) before their writers run, and close clients
        // that read fine as slow consumers: let the writers drain between
        // bursts. Batches spread over many channels never wait.
        let n = burst.entry(channel).or_default();
        *n += 1;
        if *n >= CHANNEL_BURST {
            burst.clear();
            tokio::task::yield_now().await;
        }
    }
    Ok(Json(BatchResponse { results }))
}

async fn publish_one(app: &AppState, principal: &ApiPrincipal, item: PublishItem<'_>) -> Result<Published, ApiError> {
    let name = item.event.as_deref().unwrap_or("publication");
    let event = EventType::parse_publishable(name).map_err(|e| ApiError::new(ErrorCode::InvalidEvent, e.to_string()))?;
    let data = Payload::from_raw(item.data).map_err(|e| ApiError::new(ErrorCode::InvalidField, format!("data: {e}")))?;
    // One event must fit a client's frame and leave room in its queue.
    let max = app.hub().limits().frame_bytes;
    if data.len() > max {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("data: {} bytes; an event's data may have at most {max}", data.len())));
    }
    event.validate(&data).map_err(|e| ApiError::new(ErrorCode::InvalidEvent, e.to_string()))?;
    if let KeyRights::User(key) = &principal.rights {
        app.api_keys().authorize_user_key(key, &item.channel, event, &data).await?;
    }
    app.check_publish_rate(principal).map_err(|refusal| match refusal {
        Refusal::Rate(wait) => ApiError::new(ErrorCode::RateLimited, format!("publish rate limit of this API key reached; retry in {} ms", wait.as_millis()))
            .retry_after(wait.as_secs() + 1),
        Refusal::Full => ApiError::new(ErrorCode::RateLimited, "rate limiter is full; retry later").retry_after(1),
    })?;
    let p = app.hub().publish(&item.channel, Draft::new(event, data)).await.map_err(|e| match e {
        PublishError::Access(AccessError::UnknownNamespace(ns)) => {
            ApiError::new(ErrorCode::InvalidField, format!("channel: unknown namespace `{ns}`"))
        }
        PublishError::Access(a) => ApiError::new(ErrorCode::Forbidden, a.to_string()),
        PublishError::Broker(b) => ApiError::new(ErrorCode::Unavailable, b.to_string()).retry_after(1),
    })?;
    Ok(Published { channel: p.channel.to_string(), offset: p.offset, epoch: p.epoch.to_string() })
}
