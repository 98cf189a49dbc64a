//! The OpenAPI document: shared components and the document's frame. Paths
//! come from each handler's `#[utoipa::path]`.

use axum::Json;
use axum::extract::State;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::state::AppState;

/// The standard error object of every error response.
#[derive(Debug, serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A code from PROTOCOL.md "Errors", e.g. `invalid_field`.
    #[schema(example = "invalid_field")]
    pub error: String,
    pub message: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    /// Also in the `x-request-id` header and in the server's log lines.
    pub request_id: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()));
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Chorus API", description = "REST API of Chorus. Realtime frames are described in PROTOCOL.md."),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "realtime", description = "WebSocket, SSE and their commands"),
        (name = "publish", description = "Server publish API for backends"),
        (name = "auth", description = "Sign-up, login, sessions, API keys"),
        (name = "channels", description = "Channels, members and messages"),
        (name = "agents", description = "Agent records"),
        (name = "admin", description = "Administration"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// An OpenAPI 3.x document (the frame; its parts are OpenAPI's own).
pub struct OpenApiDocument;

impl utoipa::PartialSchema for OpenApiDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let object = || ObjectBuilder::new().schema_type(Type::Object);
        object()
            .description(Some("An OpenAPI 3.x document"))
            .property("openapi", ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^3\.\d+\.\d+$")))
            .property(
                "info",
                object()
                    .property("title", ObjectBuilder::new().schema_type(Type::String))
                    .property("version", ObjectBuilder::new().schema_type(Type::String))
                    .required("title")
                    .required("version")
                    .additional_properties(Some(AdditionalProperties::FreeForm(true))),
            )
            .property("paths", object())
            .property("components", object())
            .required("openapi")
            .required("info")
            .required("paths")
            // The rest is OpenAPI's (tags, security, ...), not ours to list.
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for OpenApiDocument {}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "This document", body = OpenApiDocument)))]
pub async fn document(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(app.openapi().clone())
}
