//! JSON bodies with errors that name the offending field.

use chorus_protocol::ErrorCode;
use serde::Deserialize;

use crate::error::ApiError;

/// Parses a JSON body; syntax errors are `malformed_json`, wrong or missing
/// fields are `invalid_field` with the field's path.
/// Bodies nested deeper than [`chorus_protocol::MAX_JSON_DEPTH`] are refused
/// (`bad_request`) before parsing, as client frames are.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if chorus_protocol::exceeds_max_depth(body) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("body: {}", chorus_protocol::depth::too_deep_message())));
    }
    // Every body of ours is an object: serde would also take a struct's
    // fields as an array (`["user","pass"]`), which the document does not allow.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            return Err(ApiError::new(ErrorCode::InvalidField, "body: must be a JSON object"));
        }
        _ => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            // serde_json reports some type errors (a number where an enum is
            // expected) as syntax errors; valid JSON means a field is wrong.
            Category::Syntax | Category::Eof | Category::Io if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() => {
                ApiError::new(ErrorCode::MalformedJson, format!("body is not valid JSON: {inner}"))
            }
            _ => {
                let msg = inner.to_string();
                let msg = msg.rfind(" at line ").map_or(msg.as_str(), |i| &msg[..i]).to_owned();
                let msg = if path == "." || path.is_empty() { msg } else { format!("{path}: {msg}") };
                ApiError::new(ErrorCode::InvalidField, msg)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[allow(dead_code)]
        a: u32,
    }

    #[test]
    fn bodies_nested_too_deeply_are_refused() {
        #[derive(Debug, Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            #[allow(dead_code)]
            data: &'a serde_json::value::RawValue,
        }
        let deep = format!(r#"{{"data":{}1{}}}"#, "[".repeat(30_000), "]".repeat(30_000));
        let e = parse_json::<Data<'_>>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
        assert!(e.message.contains("128"), "{}", e.message);
        let fine = format!(r#"{{"data":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(parse_json::<Data<'_>>(fine.as_bytes()).is_ok());
    }

    #[test]
    fn only_objects_are_bodies() {
        for body in [&br#"["user","pass"]"#[..], b"5", b"\"x\"", b"null", b" [1]"] {
            let e = parse_json::<T>(body).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (ErrorCode::InvalidField, "body: must be a JSON object"), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_json::<T>(b"[1").unwrap_err().code, ErrorCode::MalformedJson);
        assert!(parse_json::<T>(br#" {"a":1}"#).is_ok());
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(parse_json::<T>(b"{").unwrap_err().code, ErrorCode::MalformedJson);
        let e = parse_json::<T>(br#"{"a":"x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.starts_with("a: "), "{}", e.message);
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Policy {
        Always,
    }

    #[derive(Debug, Deserialize)]
    struct WithEnum {
        #[allow(dead_code)]
        policy: Policy,
    }

    #[test]
    fn a_wrong_type_for_an_enum_is_a_field_error() {
        let e = parse_json::<WithEnum>(br#"{"policy":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{}", e.message);
        assert!(e.message.starts_with("policy"), "{}", e.message);
        assert!(parse_json::<WithEnum>(br#"{"policy":"always"}"#).is_ok());
        assert_eq!(parse_json::<WithEnum>(br#"{"policy":5"#).unwrap_err().code, ErrorCode::MalformedJson);
    }
}
