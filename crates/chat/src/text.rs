//! Short free-text fields (channel names and topics, the maintenance
//! notice): trimmed, bounded in characters, one clean line. Every error
//! names its field.

use crate::ChatError;

/// Trimmed; at most `max` characters and no control characters. May be empty.
pub(crate) fn line<'a>(field: &str, raw: &'a str, max: usize) -> Result<&'a str, ChatError> {
    let text = raw.trim();
    let n = text.chars().count();
    if n > max {
        return Err(ChatError::invalid(field, format!("must be at most {max} characters (got {n})")));
    }
    // It may end up in other messages and in logs; keep it one clean line.
    if text.chars().any(char::is_control) {
        return Err(ChatError::invalid(field, "must not contain control characters"));
    }
    Ok(text)
}

/// A [`line`] where empty means none.
pub(crate) fn optional_line(field: &str, raw: &str, max: usize) -> Result<Option<String>, ChatError> {
    line(field, raw, max).map(|t| (!t.is_empty()).then(|| t.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_bounded_and_clean() {
        assert_eq!(line("name", "  a b  ", 3), Ok("a b"));
        assert_eq!(line("name", "éé", 2), Ok("éé"), "characters, not bytes");
        assert!(matches!(line("name", "abcd", 3), Err(ChatError::Invalid(m)) if m == "name: must be at most 3 characters (got 4)"));
        assert!(matches!(line("topic", "a\tb", 9), Err(ChatError::Invalid(m)) if m.starts_with("topic: ")));
        assert_eq!(optional_line("topic", "   ", 9), Ok(None));
        assert_eq!(optional_line("topic", " x ", 9), Ok(Some("x".into())));
    }
}
