//! Checks every response the tests receive against the OpenAPI document the
//! server serves, and checks the document itself.
//!
//! A response conforms when its path and method are an operation of the
//! document, its status is declared for that operation, its content type is
//! one the status declares (and a 204 has no body), its body validates
//! against the declared schema, and an error (4xx/5xx) is the standard error
//! object whose `request_id` equals the `x-request-id` header.
//!
//! Response schemas are checked closed: an object schema that lists its
//! `properties` and says nothing about others gets `unevaluatedProperties:
//! false`, so a field the server sends but the document does not describe
//! fails too ("covers every response").

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// The response header that carries the request id.
pub use chorus_server::request_id::HEADER as REQUEST_ID_HEADER;

/// Where the standard error object of an error response is.
const ERROR_BODY: &str = "#/components/schemas/ErrorBody";
/// The SSE command endpoint (PROTOCOL.md "Commands for an SSE connection")
/// answers an error with the standard error object, or with the command's
/// reply `{id, error}` that carries it under `error`.
const COMMAND_ERROR: &str = "#/components/schemas/CommandError";
/// Error statuses whose body is not an error: a health report for load
/// balancers (503 while draining or unhealthy).
const NOT_ERRORS: &[(&str, &str)] = &[("get", "/health"), ("get", "/health/detailed")];

/// One response as the client saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub method: &'a str,
    /// The request's path; a query string is ignored.
    pub path: &'a str,
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The raw body; empty when there was none.
    pub body: &'a str,
}

/// The document with its compiled response schemas.
pub struct Conformance {
    doc: Value,
    /// Component schemas prepared for validation (closed), shared by every compiled schema.
    components: Value,
    /// Keyed by the JSON pointer of a response schema in the document, so
    /// bounded by the number of responses the document declares.
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Conformance {
    pub fn new(doc: Value) -> Conformance {
        let open = allof_targets(&doc);
        let mut components = doc.pointer("/components/schemas").cloned().unwrap_or_else(|| json!({}));
        if let Some(map) = components.as_object_mut() {
            for (name, schema) in map.iter_mut() {
                // A component that is an `allOf` branch somewhere stays open at its top level.
                close(schema, open.contains(name.as_str()));
            }
        }
        Conformance { doc, components, compiled: Mutex::new(HashMap::new()) }
    }

    /// One checker per distinct document for the whole test binary, so each
    /// schema is compiled once however many servers the tests start.
    pub fn shared(doc: Value) -> Arc<Conformance> {
        static ALL: OnceLock<Mutex<Vec<Arc<Conformance>>>> = OnceLock::new();
        let mut all = ALL.get_or_init(Default::default).lock().expect("conformance cache");
        if let Some(c) = all.iter().find(|c| c.doc == doc) {
            return c.clone();
        }
        let c = Arc::new(Conformance::new(doc));
        all.push(c.clone());
        c
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// `Err` says how the response departs from the document.
    pub fn check(&self, r: &Observed<'_>) -> Result<(), String> {
        let method = r.method.to_ascii_lowercase();
        let route = r.path.split('?').next().unwrap_or(r.path);
        let template = self.template_for(route).ok_or_else(|| format!("{route} matches no path of the document"))?;
        let op_pointer = format!("/paths/{}/{method}", escape(template));
        let op = self.doc.pointer(&op_pointer).filter(|o| o.is_object()).ok_or_else(|| {
            let declared: Vec<&String> = self.doc["paths"][template].as_object().map(|m| m.keys().collect()).unwrap_or_default();
            format!("{} is not an operation of {template} (declared: {declared:?})", r.method.to_ascii_uppercase())
        })?;
        let status = r.status.to_string();
        let range = format!("{}XX", r.status / 100);
        let key = [status.as_str(), range.as_str()].into_iter().find(|k| op["responses"].get(k).is_some()).ok_or_else(|| {
            let declared: Vec<&String> = op["responses"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
            format!("status {status} is not declared (declared: {declared:?})")
        })?;
        let mut res_pointer = format!("{op_pointer}/responses/{key}");
        let mut response = &op["responses"][key];
        if let Some(target) = response.get("$ref").and_then(Value::as_str) {
            res_pointer = target.strip_prefix('#').ok_or_else(|| format!("response $ref {target} is not local"))?.to_owned();
            response = self.doc.pointer(&res_pointer).ok_or_else(|| format!("response $ref {target} does not resolve"))?;
        }

        match r.request_id {
            Some(id) if !id.is_empty() => {}
            _ => return Err(format!("no {REQUEST_ID_HEADER} header")),
        }

        let content = response.get("content").and_then(Value::as_object).filter(|c| !c.is_empty());
        let bodiless = r.status == 204 || r.status == 304 || r.status < 200;
        if bodiless || content.is_none() {
            if !r.body.is_empty() {
                return Err(format!("status {status} must have no body (the document declares none), got {:?}", r.body));
            }
            if bodiless && content.is_some() {
                return Err(format!("the document declares content for {status}, which has no body"));
            }
            return Ok(());
        }
        let content = content.expect("checked above");
        if r.body.is_empty() {
            return Err(format!("the body is empty; the document declares {:?}", content.keys().collect::<Vec<_>>()));
        }
        let media = r.content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).unwrap_or_default();
        let declared_media = content.keys().find(|k| media_matches(k, &media)).ok_or_else(|| {
            format!("content type {media:?} is not declared for {status} (declared: {:?})", content.keys().collect::<Vec<_>>())
        })?;
        let declared_schema = content[declared_media.as_str()].get("schema");
        if !is_json(&media) {
            return Ok(());
        }
        let body: Value = serde_json::from_str(r.body).map_err(|e| format!("the body is not JSON ({e})"))?;
        if let Some(schema) = declared_schema {
            let pointer = format!("{res_pointer}/content/{}/schema", escape(declared_media));
            let validator = self.validator(&pointer, schema)?;
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("at {:?}: {e}", e.instance_path().as_str())).collect();
            if !errors.is_empty() {
                return Err(format!("the body does not match the schema {schema}:\n  {}", errors.join("\n  ")));
            }
        }
        if r.status >= 400 {
            let schema_ref = declared_schema.and_then(|s| s.get("$ref")).and_then(Value::as_str);
            let error = match schema_ref {
                Some(ERROR_BODY) => &body,
                Some(COMMAND_ERROR) if !body["error"].is_string() => &body["error"],
                Some(COMMAND_ERROR) => &body,
                _ if NOT_ERRORS.contains(&(method.as_str(), template)) => return Ok(()),
                _ => return Err(format!("error status {status} is not declared with the standard error object ({ERROR_BODY})")),
            };
            standard_error(error, r.request_id.unwrap_or_default())?;
        }
        Ok(())
    }

    /// The document's path for a concrete one: `{param}` matches any one
    /// segment; of several matches the one with literals earliest wins
    /// (`/publish/batch` before a `/publish/{x}`).
    pub fn template_for(&self, route: &str) -> Option<&str> {
        let segments: Vec<&str> = route.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|t| {
                let parts: Vec<&str> = t.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literals = Vec::with_capacity(parts.len());
                for (p, s) in parts.iter().zip(&segments) {
                    let param = p.starts_with('{') && p.ends_with('}');
                    if param && s.is_empty() || !param && p != s {
                        return None;
                    }
                    literals.push(!param);
                }
                Some((literals, t.as_str()))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, t)| t)
    }

    fn validator(&self, pointer: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let mut compiled = self.compiled.lock().expect("compiled schemas");
        if let Some(v) = compiled.get(pointer) {
            return Ok(v.clone());
        }
        // The components sit at the same place as in the document, so
        // `#/components/schemas/X` resolves inside this one schema.
        let mut root = match schema {
            Value::Object(_) => schema.clone(),
            other => json!({ "allOf": [other] }),
        };
        close(&mut root, false);
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = json!({ "schemas": self.components });
        let v = jsonschema::draft202012::options().build(&root).map_err(|e| format!("the schema at {pointer} does not compile: {e}"))?;
        let v = Arc::new(v);
        compiled.insert(pointer.to_owned(), v.clone());
        Ok(v)
    }
}

/// Panics with everything needed to see why a response does not conform.
pub fn assert_conforms(c: &Conformance, r: &Observed<'_>) {
    if let Err(e) = c.check(r) {
        let route = r.path.split('?').next().unwrap_or(r.path);
        let operation = c.template_for(route).unwrap_or("(none)");
        panic!(
            "{} {} -> {} does not match the OpenAPI document: {e}\noperation: {} {operation}\ncontent-type: {:?}\nbody: {}",
            r.method, r.path, r.status, r.method, r.content_type, r.body
        );
    }
}

/// `{error, message, timestamp, request_id}`, nothing else, all strings, and
/// `request_id` the response's.
fn standard_error(v: &Value, request_id: &str) -> Result<(), String> {
    let obj = v.as_object().ok_or_else(|| format!("the error is not an object: {v}"))?;
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want = BTreeSet::from(["error", "message", "timestamp", "request_id"]);
    if keys != want {
        return Err(format!("the error object has fields {keys:?}, the standard object has {want:?}"));
    }
    let s = |k: &str| obj[k].as_str().ok_or_else(|| format!("error field `{k}` is not a string: {}", obj[k]));
    let code = s("error")?;
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(format!("error code {code:?} is not a snake_case code"));
    }
    if s("message")?.is_empty() {
        return Err("the error message is empty".into());
    }
    let ts = s("timestamp")?;
    if !is_utc_timestamp(ts) {
        return Err(format!("timestamp {ts:?} is not RFC 3339 UTC"));
    }
    let id = s("request_id")?;
    if id != request_id {
        return Err(format!("request_id {id:?} differs from the {REQUEST_ID_HEADER} header {request_id:?}"));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &s[19.min(s.len())..];
    let fraction_ok = match rest.strip_suffix('Z') {
        Some("") => true,
        Some(f) => f.len() > 1 && f.starts_with('.') && f[1..].bytes().all(|d| d.is_ascii_digit()),
        None => false,
    };
    fixed && fraction_ok
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

fn media_matches(declared: &str, actual: &str) -> bool {
    let declared = declared.to_ascii_lowercase();
    declared == actual || declared == "*/*" || declared.strip_suffix("/*").is_some_and(|top| actual.split('/').next() == Some(top))
}

/// JSON pointer escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Component names used directly as `allOf` branches.
fn allof_targets(doc: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(branches) = m.get("allOf").and_then(Value::as_array) {
                    for b in branches {
                        if let Some(name) = b.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
                            out.insert(name.to_owned());
                        }
                    }
                }
                m.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(doc, &mut out);
    out
}

/// Adds `unevaluatedProperties: false` to every object schema that lists its
/// properties and is silent about others. `allOf` branches stay open (their
/// siblings add properties); their parent is closed instead.
fn close(schema: &mut Value, keep_open: bool) {
    let Value::Object(m) = schema else { return };
    let has_allof = m.contains_key("allOf");
    if !keep_open
        && (m.contains_key("properties") || has_allof)
        && !m.contains_key("additionalProperties")
        && !m.contains_key("unevaluatedProperties")
    {
        m.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (k, child) in m.iter_mut() {
        match k.as_str() {
            "properties" | "patternProperties" | "$defs" | "dependentSchemas" => {
                if let Value::Object(props) = child {
                    props.values_mut().for_each(|s| close(s, false));
                }
            }
            "allOf" => each(child, true),
            "oneOf" | "anyOf" | "prefixItems" => each(child, false),
            "items" | "additionalProperties" | "not" | "if" | "then" | "else" | "contains" | "propertyNames" => close(child, false),
            _ => {}
        }
    }
}

fn each(list: &mut Value, keep_open: bool) {
    if let Value::Array(a) = list {
        a.iter_mut().for_each(|s| close(s, keep_open));
    }
}

// ------------------------------------------------------------ the document

/// Every `$ref` in the document, with where it is.
pub fn refs(doc: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let here = format!("{at}/{}", escape(k));
                    match (k.as_str(), c) {
                        ("$ref", Value::String(r)) => out.push((here, r.clone())),
                        _ => walk(c, &here, out),
                    }
                }
            }
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| walk(c, &format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

/// Everything wrong with the document's frame, references and operations.
pub fn document_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")) {
        problems.push(format!("`openapi` is {}, not 3.x", doc["openapi"]));
    }
    for field in ["title", "version"] {
        if !doc["info"][field].is_string() {
            problems.push(format!("info.{field} is missing"));
        }
    }
    for (at, target) in refs(doc) {
        match target.strip_prefix('#') {
            Some(pointer) if doc.pointer(pointer).is_some() => {}
            _ => problems.push(format!("$ref {target} at {at} does not resolve")),
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().cloned().unwrap_or_default();
    for (method, path) in operations(doc) {
        problems.extend(operation_problems(&schemes, &path, &method, &doc["paths"][&path][&method]));
    }
    problems
}

/// Every `(method, path)` the document declares.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let empty = Map::new();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap_or(&empty) {
        for method in item.as_object().unwrap_or(&empty).keys() {
            if matches!(method.as_str(), "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace") {
                out.push((method.clone(), path.clone()));
            }
        }
    }
    out
}

fn operation_problems(schemes: &Map<String, Value>, path: &str, method: &str, op: &Value) -> Vec<String> {
    let name = format!("{} {path}", method.to_ascii_uppercase());
    let mut problems = Vec::new();
    let Some(responses) = op["responses"].as_object().filter(|r| !r.is_empty()) else {
        return vec![format!("{name} declares no responses")];
    };
    // Path parameters are declared, and every declared one is in the path.
    let in_path: BTreeSet<&str> = path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
    let declared: BTreeSet<&str> = op["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    if in_path != declared {
        problems.push(format!("{name}: path parameters {in_path:?} but declared {declared:?}"));
    }
    for requirement in op["security"].as_array().into_iter().flatten() {
        for scheme in requirement.as_object().into_iter().flat_map(|r| r.keys()) {
            if !schemes.contains_key(scheme) {
                problems.push(format!("{name}: security scheme {scheme} is not in components.securitySchemes"));
            }
        }
    }
    let not_error = NOT_ERRORS.contains(&(method, path));
    let mut error_bodies = 0;
    for (status, response) in responses {
        let valid_key = status.len() == 3 && (status.bytes().all(|b| b.is_ascii_digit()) || status[1..] == *"XX" && status.as_bytes()[0].is_ascii_digit());
        if !valid_key {
            problems.push(format!("{name}: response key {status} is not a status (`default` would accept any)"));
            continue;
        }
        let content = response["content"].as_object().cloned().unwrap_or_default();
        if matches!(status.as_str(), "204" | "304") && !content.is_empty() {
            problems.push(format!("{name}: {status} declares content"));
        }
        for (media, c) in &content {
            if is_json(media) && c.get("schema").is_none() {
                problems.push(format!("{name}: {status} {media} has no schema"));
            }
        }
        if status.starts_with('4') || status.starts_with('5') {
            let schema_ref = content.get("application/json").and_then(|c| c["schema"]["$ref"].as_str());
            match schema_ref {
                Some(ERROR_BODY | COMMAND_ERROR) => error_bodies += u32::from(status.starts_with('4')),
                _ if not_error => {}
                _ => problems.push(format!("{name}: error {status} does not use {ERROR_BODY}")),
            }
        }
    }
    let takes_input = op.get("requestBody").is_some()
        || op["parameters"].as_array().is_some_and(|p| !p.is_empty())
        || op["security"].as_array().is_some_and(|s| !s.is_empty());
    if takes_input && !not_error && error_bodies == 0 {
        problems.push(format!("{name} takes auth or input but declares no 4xx with {ERROR_BODY}"));
    }
    problems
}

// ------------------------------------------------------------ tests

/// The checker rejects what it must: it cannot silently pass.
mod self_test {
    use super::*;

    fn doc() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "1" },
            "paths": {
                "/things/{id}": { "get": {
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": {
                        "200": { "description": "", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } },
                        "404": { "description": "", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
                    }
                }, "delete": {
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": {
                        "204": { "description": "" },
                        "404": { "description": "", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
                    }
                } },
                "/things/special": { "get": { "responses": {
                    "200": { "description": "", "content": { "text/plain": {} } }
                } } }
            },
            "components": { "schemas": {
                "Thing": { "type": "object", "required": ["id", "size"], "properties": {
                    "id": { "type": "string" },
                    "size": { "type": "integer", "minimum": 0 },
                    "tags": { "type": "array", "items": { "$ref": "#/components/schemas/Tag" } }
                } },
                "Tag": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } },
                "ErrorBody": { "type": "object", "required": ["error", "message", "timestamp", "request_id"], "properties": {
                    "error": { "type": "string" }, "message": { "type": "string" },
                    "timestamp": { "type": "string" }, "request_id": { "type": "string" }
                } }
            } }
        })
    }

    fn check(method: &str, path: &str, status: u16, body: &str) -> Result<(), String> {
        let c = Conformance::new(doc());
        let content_type = (!body.is_empty()).then_some("application/json");
        c.check(&Observed { method, path, status, content_type, request_id: Some("req-1"), body })
    }

    fn thing(v: Value) -> String {
        v.to_string()
    }

    fn error(id: &str) -> String {
        json!({ "error": "not_found", "message": "no such thing", "timestamp": "2026-11-22T10:20:00.123Z", "request_id": id }).to_string()
    }

    #[test]
    fn accepts_a_conforming_response() {
        check("GET", "/things/a1?x=1", 200, &thing(json!({ "id": "a1", "size": 3, "tags": [{ "name": "t" }] }))).unwrap();
        check("GET", "/things/a1", 404, &error("req-1")).unwrap();
        check("DELETE", "/things/a1", 204, "").unwrap();
    }

    #[test]
    fn rejects_an_undeclared_status() {
        let e = check("GET", "/things/a1", 500, &error("req-1")).unwrap_err();
        assert!(e.contains("not declared"), "{e}");
    }

    #[test]
    fn rejects_a_missing_required_field() {
        let e = check("GET", "/things/a1", 200, &thing(json!({ "id": "a1" }))).unwrap_err();
        assert!(e.contains("size"), "{e}");
    }

    #[test]
    fn rejects_a_wrong_type_also_behind_a_ref() {
        let e = check("GET", "/things/a1", 200, &thing(json!({ "id": "a1", "size": "3" }))).unwrap_err();
        assert!(e.contains("/size"), "{e}");
        let e = check("GET", "/things/a1", 200, &thing(json!({ "id": "a1", "size": 3, "tags": [{ "name": 7 }] }))).unwrap_err();
        assert!(e.contains("/tags/0/name"), "{e}");
    }

    #[test]
    fn rejects_an_undocumented_field() {
        let e = check("GET", "/things/a1", 200, &thing(json!({ "id": "a1", "size": 3, "secret": true }))).unwrap_err();
        assert!(e.contains("secret"), "{e}");
        let e = check("GET", "/things/a1", 200, &thing(json!({ "id": "a1", "size": 3, "tags": [{ "name": "t", "x": 1 }] }))).unwrap_err();
        assert!(e.contains("x"), "{e}");
    }

    #[test]
    fn rejects_an_unknown_path_or_method() {
        let e = check("GET", "/nothing", 200, "").unwrap_err();
        assert!(e.contains("no path"), "{e}");
        let e = check("GET", "/things", 200, "").unwrap_err();
        assert!(e.contains("no path"), "{e}");
        let e = check("POST", "/things/a1", 200, &thing(json!({ "id": "a1", "size": 3 }))).unwrap_err();
        assert!(e.contains("not an operation"), "{e}");
    }

    #[test]
    fn a_literal_segment_wins_over_a_parameter() {
        let c = Conformance::new(doc());
        assert_eq!(c.template_for("/things/special"), Some("/things/special"));
        assert_eq!(c.template_for("/things/other"), Some("/things/{id}"));
        assert_eq!(c.template_for("/things/"), None);
    }

    #[test]
    fn rejects_a_body_where_none_is_declared_and_none_where_one_is() {
        let e = check("DELETE", "/things/a1", 204, "{}").unwrap_err();
        assert!(e.contains("no body"), "{e}");
        let e = check("GET", "/things/a1", 200, "").unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn rejects_an_undeclared_content_type() {
        let c = Conformance::new(doc());
        let body = thing(json!({ "id": "a1", "size": 3 }));
        let r = Observed { method: "GET", path: "/things/a1", status: 200, content_type: Some("text/html"), request_id: Some("r"), body: &body };
        assert!(c.check(&r).unwrap_err().contains("content type"));
        let r = Observed { content_type: None, ..r };
        assert!(c.check(&r).unwrap_err().contains("content type"));
    }

    #[test]
    fn rejects_a_non_standard_error() {
        let e = check("GET", "/things/a1", 404, &error("someone-else")).unwrap_err();
        assert!(e.contains("request_id"), "{e}");
        let mut extra: Value = serde_json::from_str(&error("req-1")).unwrap();
        extra["detail"] = json!("x");
        let e = check("GET", "/things/a1", 404, &extra.to_string()).unwrap_err();
        assert!(e.contains("detail"), "{e}");
        let bad_time = json!({ "error": "not_found", "message": "m", "timestamp": "yesterday", "request_id": "req-1" });
        let e = check("GET", "/things/a1", 404, &bad_time.to_string()).unwrap_err();
        assert!(e.contains("timestamp"), "{e}");
        let e = check("GET", "/things/a1", 404, "no such thing").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn rejects_a_response_without_request_id() {
        let c = Conformance::new(doc());
        let r = Observed { method: "DELETE", path: "/things/a1", status: 204, content_type: None, request_id: None, body: "" };
        assert!(c.check(&r).unwrap_err().contains(REQUEST_ID_HEADER));
    }

    #[test]
    fn timestamps() {
        for ok in ["2026-11-22T10:20:00Z", "2026-11-22T10:20:00.123Z", "2026-11-22T10:20:00.123456789Z"] {
            assert!(is_utc_timestamp(ok), "{ok}");
        }
        for bad in ["2026-11-22T10:20:00", "2026-11-22 10:20:00Z", "2026-11-22T10:20:00.Z", "2026-11-22T10:20:00+01:00", ""] {
            assert!(!is_utc_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn finds_document_problems() {
        assert_eq!(document_problems(&doc()), Vec::<String>::new());
        let mut d = doc();
        d["openapi"] = json!("2.0");
        d["paths"]["/things/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] = json!("#/components/schemas/Nope");
        d["paths"]["/things/{id}"]["delete"]["responses"]["404"]["content"]["application/json"]["schema"] = json!({ "type": "object" });
        d["paths"]["/things/{id}"]["delete"]["responses"]["default"] = json!({ "description": "" });
        let problems = document_problems(&d).join("\n");
        for want in ["not 3.x", "Nope", "DELETE /things/{id}: error 404", "default", "declares no 4xx"] {
            assert!(problems.contains(want), "{want} missing from:\n{problems}");
        }
    }
}

/// The document the server serves: sound, complete, and matched by the router.
mod served {
    use chorus_testkit::SseClient;
    use chorus_testkit::db::TestEngine;

    use super::*;
    use crate::common::App;

    #[tokio::test]
    async fn the_document_is_openapi_3_and_sound() {
        let app = App::start(TestEngine::Sqlite).await;
        let r = app.call("GET", "/api/v1/openapi.json", None, None).await;
        assert_eq!(r.status, 200);
        assert!(r.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", r.body["openapi"]);
        let problems = document_problems(&r.body);
        assert!(problems.is_empty(), "the OpenAPI document has problems:\n{}", problems.join("\n"));
        app.stop().await;
    }

    #[tokio::test]
    async fn openapi_json_lists_every_chat_route() {
        let app = App::start(TestEngine::Sqlite).await;
        let r = app.call("GET", "/api/v1/openapi.json", None, None).await;
        assert_eq!(r.status, 200);
        assert!(r.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", r.body["openapi"]);
        let routes = [
            ("post", "/api/v1/auth/signup"),
            ("post", "/api/v1/auth/login"),
            ("post", "/api/v1/auth/refresh"),
            ("post", "/api/v1/auth/logout"),
            ("get", "/api/v1/auth/sessions"),
            ("delete", "/api/v1/auth/sessions/{id}"),
            ("get", "/api/v1/me"),
            ("post", "/api/v1/api-keys"),
            ("get", "/api/v1/api-keys"),
            ("delete", "/api/v1/api-keys/{id}"),
            ("get", "/api/v1/channels"),
            ("post", "/api/v1/channels"),
            ("get", "/api/v1/channels/{id}"),
            ("patch", "/api/v1/channels/{id}"),
            ("delete", "/api/v1/channels/{id}"),
            ("get", "/api/v1/channels/{id}/members"),
            ("post", "/api/v1/channels/{id}/members"),
            ("delete", "/api/v1/channels/{id}/members/{kind}/{member_id}"),
            ("get", "/api/v1/channels/{id}/messages"),
            ("post", "/api/v1/channels/{id}/messages"),
            ("patch", "/api/v1/channels/{id}/messages/{message_id}"),
            ("delete", "/api/v1/channels/{id}/messages/{message_id}"),
            ("post", "/api/v1/publish"),
            ("post", "/api/v1/publish/batch"),
            ("post", "/api/v1/connections/{id}/commands"),
            ("post", "/api/v1/agents"),
            ("get", "/api/v1/agents"),
            ("get", "/api/v1/agents/{id}"),
            ("patch", "/api/v1/agents/{id}"),
            ("delete", "/api/v1/agents/{id}"),
            ("get", "/api/v1/admin/connections"),
            ("post", "/api/v1/admin/users/{id}/disconnect"),
            ("post", "/api/v1/admin/cleanup"),
            ("get", "/api/v1/admin/maintenance"),
            ("put", "/api/v1/admin/maintenance"),
            ("get", "/api/v1/admin/firehose"),
        ];
        let missing: Vec<_> = routes.iter().filter(|(m, p)| !r.body["paths"][*p][*m].is_object()).collect();
        assert!(missing.is_empty(), "not in the document: {missing:?}");
        app.stop().await;
    }

    /// Every documented operation is routed (no route-level 404 or 405), what
    /// it answers to an anonymous, empty request is documented too, and the
    /// router serves no undocumented method on a documented path.
    #[tokio::test]
    async fn every_documented_operation_is_served() {
        let app = App::start(TestEngine::Sqlite).await;
        // How the router answers a route it does not have.
        let res = app.http.get(app.url("/api/v1/conformance-no-such-route")).send().await.expect("request");
        assert_eq!(res.status(), 404);
        let unrouted: Value = res.json().await.expect("json");
        let unrouted = unrouted["message"].as_str().expect("message").to_owned();

        let ops = operations(app.conformance().doc());
        assert!(ops.len() >= 25, "only {} operations: {ops:?}", ops.len());
        for (method, path) in ops {
            let concrete: String =
                path.split('/').map(|s| if s.starts_with('{') { "probe" } else { s }).collect::<Vec<_>>().join("/");
            let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let mut req = app.http.request(m, app.url(&concrete));
            if matches!(method.as_str(), "post" | "put" | "patch") {
                req = req.json(&json!({}));
            }
            // `send` checks the answer against the document.
            let r = app.send(req).await;
            assert_ne!(r.status, 405, "{method} {path} is documented but the router refuses the method");
            let route_404 = r.status == 404 && r.body["message"].as_str() == Some(unrouted.as_str());
            assert!(!route_404, "{method} {path} is documented but not routed");
        }
        // HEAD (answered for GET) and OPTIONS (CORS preflight) are left out.
        let doc = app.conformance().doc();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let concrete: String =
                path.split('/').map(|s| if s.starts_with('{') { "probe" } else { s }).collect::<Vec<_>>().join("/");
            for method in ["get", "post", "put", "patch", "delete"].into_iter().filter(|m| item.get(*m).is_none()) {
                let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
                let res = app.http.request(m, app.url(&concrete)).send().await.expect("request");
                assert_eq!(res.status(), 405, "{method} {path} is served but not documented");
            }
        }
        app.stop().await;
    }

    /// The real document's schemas are strict enough to catch a departure.
    #[tokio::test]
    async fn the_real_document_rejects_departures() {
        let app = App::start(TestEngine::Sqlite).await;
        let alice = app.user("alice").await;
        let me = app.get("/api/v1/me", &alice.token).await;
        assert_eq!(me.status, 200);
        let c = app.conformance();
        let id = me.request_id.as_deref();
        let observed = |method: &'static str, path: &'static str, status: u16, body: &Value| -> Result<(), String> {
            let body = body.to_string();
            c.check(&Observed { method, path, status, content_type: Some("application/json"), request_id: id, body: &body })
        };
        observed("GET", "/api/v1/me", 200, &me.body).expect("the real response conforms");
        let mut missing = me.body.clone();
        missing.as_object_mut().expect("object").remove("id");
        let mut wrong = me.body.clone();
        wrong["username"] = json!(5);
        let mut extra = me.body.clone();
        extra["password_hash"] = json!("x");
        for (what, result) in [
            ("a missing field", observed("GET", "/api/v1/me", 200, &missing)),
            ("a wrong type", observed("GET", "/api/v1/me", 200, &wrong)),
            ("an undocumented field", observed("GET", "/api/v1/me", 200, &extra)),
            ("an undeclared status", observed("GET", "/api/v1/me", 418, &me.body)),
            ("an unknown path", observed("GET", "/api/v1/mine", 200, &me.body)),
            ("an undocumented method", observed("PUT", "/api/v1/me", 200, &me.body)),
            ("a body on a 204", observed("DELETE", "/api/v1/channels/c1", 204, &me.body)),
            ("an error that is not the error object", observed("GET", "/api/v1/me", 401, &me.body)),
        ] {
            assert!(result.is_err(), "{what} was accepted");
        }
        let denied = app.call("GET", "/api/v1/me", None, None).await;
        assert_eq!(denied.status, 401);
        let mut other = denied.body.clone();
        other["request_id"] = json!("another-request");
        assert!(observed("GET", "/api/v1/me", 401, &other).unwrap_err().contains("request_id"));
        app.stop().await;
    }

    /// The SSE command endpoint answers with replies and standard errors as documented.
    #[tokio::test]
    async fn sse_command_answers_conform() {
        let app = App::start(TestEngine::Sqlite).await;
        let alice = app.user("alice").await;
        let mut sse = SseClient::open(&app.http, &app.base, &alice.token, &format!("channel=user:{}", alice.id), None).await.expect("sse");
        let connected = sse.next().await.expect("connected");
        let url = connected.data["data"]["commands_url"].as_str().expect("commands_url").to_owned();
        let post = |body: Value| app.send(app.http.post(app.url(&url)).bearer_auth(&alice.token).json(&body));

        let r = post(json!({ "id": 1, "type": "ping" })).await;
        assert_eq!((r.status, &r.body["result"]["pong"]), (200, &json!(true)), "{}", r.body);
        // An error reply `{id, error}` names this HTTP request.
        let r = post(json!({ "id": 2, "type": "subscribe", "channel": "room:not-a-channel" })).await;
        assert_eq!((r.status, r.body["id"].as_u64(), r.body["error"]["error"].as_str()), (403, Some(2), Some("forbidden")), "{}", r.body);
        assert_eq!(r.body["error"]["request_id"].as_str(), r.request_id.as_deref());
        // Refused before the command runs: the standard error object.
        let r = post(json!({ "id": 3, "type": "connect", "token": "x" })).await;
        assert_eq!((r.status, r.body["error"].as_str()), (409, Some("conflict")), "{}", r.body);
        let r = app.send(app.http.post(app.url(&url)).bearer_auth(&alice.token).body("{")).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let r = app.call("POST", "/api/v1/connections/not-a-connection/commands", Some(&alice.token), Some(json!({ "id": 4, "type": "ping" }))).await;
        assert_eq!(r.status, 404);
        app.stop().await;
    }
}
