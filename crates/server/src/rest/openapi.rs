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

/// Rules the annotations cannot state, added to the generated document so
/// that it declares everything the server enforces: the models and tools
/// this server's configuration allows, and that an API key takes at most one
/// of `channels` and `agent_id`.
pub fn refine(doc: &mut serde_json::Value, chat: &chorus_chat::ChatConfig) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    for body in ["CreateAgentBody", "UpdateAgentBody"] {
        let props = &mut schemas[body]["properties"];
        if props.is_object() {
            set_enum(&mut props["model"], &chat.allowed_models);
            set_enum(&mut props["tools"]["items"], &chat.allowed_tools);
        }
    }
    if schemas["CreateAgentBody"].is_object() {
        let props = &mut schemas["CreateAgentBody"]["properties"];
        props["quirks"]["items"]["minLength"] = json!(1);
        props["quirks"]["items"]["maxLength"] = json!(chat.agent_quirk_max_chars);
        props["quirks"]["maxItems"] = json!(chat.agent_quirks_max);
    }
    if schemas["UpdateAgentBody"].is_object() {
        let quirks = &mut schemas["UpdateAgentBody"]["properties"]["quirks"];
        // `Option<Vec<String>>` may be a `oneOf` with null; constrain the array branch.
        let arrays: Vec<&mut serde_json::Value> = match quirks.get_mut("oneOf").and_then(|b| b.as_array_mut()) {
            Some(branches) => branches.iter_mut().filter(|b| b["type"] == "array").collect(),
            None => vec![quirks],
        };
        for a in arrays {
            a["items"]["minLength"] = json!(1);
            a["items"]["maxLength"] = json!(chat.agent_quirk_max_chars);
            a["maxItems"] = json!(chat.agent_quirks_max);
        }
    }
    if schemas["ApiKeyBody"].is_object() {
        schemas["ApiKeyBody"]["not"] = json!({ "required": ["channels", "agent_id"] });
        // A channel name (`namespace:id`) or `namespace:prefix*`, as chorus_chat::keys checks.
        let pattern = "^[a-z][a-z0-9_-]{0,31}:([A-Za-z0-9_.:@-]{1,128}|[A-Za-z0-9_.:@-]{0,127}[*])$";
        let channels = &mut schemas["ApiKeyBody"]["properties"]["channels"];
        let arrays: Vec<&mut serde_json::Value> = match channels.get_mut("oneOf").and_then(|b| b.as_array_mut()) {
            Some(branches) => branches.iter_mut().filter(|b| b["type"] == "array").collect(),
            None => vec![channels],
        };
        for a in arrays {
            a["items"]["pattern"] = json!(pattern);
        }
    }
}

/// Adds `enum` to a string schema, or to the string branch of a nullable one.
fn set_enum(schema: &mut serde_json::Value, values: &[String]) {
    let values = serde_json::Value::from(values.to_vec());
    if let Some(branches) = schema.get_mut("oneOf").and_then(|b| b.as_array_mut()) {
        for b in branches.iter_mut().filter(|b| b["type"] == "string") {
            b["enum"] = values.clone();
        }
        return;
    }
    if schema.is_object() {
        schema["enum"] = values;
    }
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "This document", body = OpenApiDocument)))]
pub async fn document(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(app.openapi().clone())
}
