//! The server publish API: `POST /api/v1/publish` and `/api/v1/publish/batch`,
//! for backends (e.g. agents that run elsewhere) holding an API key. Events
//! are checked against their type's schema before they are accepted.

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

use crate::credentials::{ApiPrincipal, api_key};
use crate::error::ApiError;
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

#[derive(Debug, Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    items: Vec<PublishItem<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ItemResult {
    Ok(Published),
    Err { error: ErrorObject },
}

#[derive(Debug, Serialize)]
pub struct BatchResponse {
    results: Vec<ItemResult>,
}

pub(crate) async fn authorize(app: &AppState, headers: &HeaderMap) -> Result<ApiPrincipal, ApiError> {
    let key = api_key(headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "an API key is required (X-API-Key or Authorization: Bearer)"))?;
    app.api_keys().check(key).await.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown or revoked API key"))
}

/// `POST /api/v1/publish`: one event.
pub async fn publish(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Published>, ApiError> {
    authorize(&app, &headers).await?;
    let item: PublishItem<'_> = parse_json(&body)?;
    Ok(Json(publish_one(&app, item).await?))
}

/// `POST /api/v1/publish/batch`: up to `publish_batch_max` events, published
/// in order; each gets its own result.
pub async fn publish_batch(
    State(app): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BatchResponse>, ApiError> {
    authorize(&app, &headers).await?;
    let batch: BatchRequest<'_> = parse_json(&body)?;
    let max = app.config().publish_batch_max;
    if batch.items.is_empty() || batch.items.len() > max {
        return Err(ApiError::new(ErrorCode::InvalidField, format!("items: must hold 1 to {max} events")));
    }
    let mut results = Vec::with_capacity(batch.items.len());
    for (i, item) in batch.items.into_iter().enumerate() {
        results.push(match publish_one(&app, item).await {
            Ok(p) => ItemResult::Ok(p),
            Err(e) => ItemResult::Err { error: ErrorObject::new(e.code, e.message, format!("{}:{i}", request_id.as_str())) },
        });
    }
    Ok(Json(BatchResponse { results }))
}

async fn publish_one(app: &AppState, item: PublishItem<'_>) -> Result<Published, ApiError> {
    let name = item.event.as_deref().unwrap_or("publication");
    let event = EventType::parse_publishable(name).map_err(|e| ApiError::new(ErrorCode::InvalidEvent, e.to_string()))?;
    let data = Payload::from_raw(item.data).map_err(|e| ApiError::new(ErrorCode::InvalidField, format!("data: {e}")))?;
    event.validate(&data).map_err(|e| ApiError::new(ErrorCode::InvalidEvent, e.to_string()))?;
    let p = app.hub().publish(&item.channel, Draft::new(event, data)).await.map_err(|e| match e {
        PublishError::Access(AccessError::UnknownNamespace(ns)) => {
            ApiError::new(ErrorCode::InvalidField, format!("channel: unknown namespace `{ns}`"))
        }
        PublishError::Access(a) => ApiError::new(ErrorCode::Forbidden, a.to_string()),
        PublishError::Broker(b) => ApiError::new(ErrorCode::Unavailable, b.to_string()).retry_after(1),
    })?;
    Ok(Published { channel: p.channel.to_string(), offset: p.offset, epoch: p.epoch.to_string() })
}
