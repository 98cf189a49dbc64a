//! How deeply JSON nests, checked before anything parses it.
//!
//! serde_json limits recursion to 128 levels when it builds values, but
//! skips nested values it does not keep (a raw `data` object, unknown
//! fields) without any limit: a 64 KiB body can nest 30,000 levels, be
//! stored, and then break every client parser it is pushed to. So every
//! JSON text Chorus accepts (frames, SSE commands, REST and publish bodies)
//! is scanned once for its depth first.

/// Deepest nesting of arrays and objects accepted, the same everywhere.
pub const MAX_JSON_DEPTH: usize = 128;

/// The message of a body or frame nested deeper than [`MAX_JSON_DEPTH`].
pub fn too_deep_message() -> String {
    format!("JSON nested deeper than {MAX_JSON_DEPTH} levels")
}

/// Whether `json` nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
/// Brackets inside strings do not count. Malformed text is not judged
/// here (the parser says what is wrong with it).
pub fn exceeds_max_depth(json: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn counts_arrays_and_objects_but_not_strings() {
        assert!(!exceeds_max_depth(nested(128).as_bytes()));
        assert!(exceeds_max_depth(nested(129).as_bytes()));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129));
        assert!(exceeds_max_depth(objects.as_bytes()));
        let in_string = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(!exceeds_max_depth(in_string.as_bytes()));
        // Siblings do not add up.
        let wide = format!("[{}]", vec![nested(100); 50].join(","));
        assert!(!exceeds_max_depth(wide.as_bytes()));
    }
}
