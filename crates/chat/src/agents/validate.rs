//! Input rules for agent records. Bounds come from `ChatConfig` (defaults
//! and their origin in `docs/decisions.md`); every error names its field.

use std::collections::HashSet;

use crate::{ChatConfig, ChatError};

/// Trimmed; 1 to `agent_name_max_chars` of ASCII letters, digits, `_`, `-` and space.
pub fn name(cfg: &ChatConfig, raw: &str) -> Result<String, ChatError> {
    let name = raw.trim();
    let max = cfg.agent_name_max_chars;
    let n = name.chars().count();
    if n == 0 {
        return Err(ChatError::invalid("name", "must not be empty"));
    }
    if n > max {
        return Err(ChatError::invalid("name", format!("must be at most {max} characters (got {n})")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '))) {
        return Err(ChatError::invalid(
            "name",
            format!("may hold only ASCII letters, digits, `_`, `-` and spaces (found {c:?})"),
        ));
    }
    Ok(name.to_owned())
}

/// Trimmed; `agent_persona_min_chars` to `agent_persona_max_chars`
/// characters. Line breaks and tabs are allowed, other control characters not.
pub fn persona(cfg: &ChatConfig, raw: &str) -> Result<String, ChatError> {
    let persona = raw.trim();
    let (min, max) = (cfg.agent_persona_min_chars, cfg.agent_persona_max_chars);
    let n = persona.chars().count();
    if n < min || n > max {
        return Err(ChatError::invalid("persona", format!("must be {min} to {max} characters (got {n})")));
    }
    if persona.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ChatError::invalid("persona", "must not contain control characters other than line breaks and tabs"));
    }
    Ok(persona.to_owned())
}

/// At most `agent_quirks_max`; each trimmed, 1 to `agent_quirk_max_chars`
/// characters, no control characters.
pub fn quirks(cfg: &ChatConfig, raw: &[String]) -> Result<Vec<String>, ChatError> {
    let max = cfg.agent_quirks_max;
    if raw.len() > max {
        return Err(ChatError::invalid("quirks", format!("at most {max} quirks (got {})", raw.len())));
    }
    let max_chars = cfg.agent_quirk_max_chars;
    raw.iter()
        .enumerate()
        .map(|(i, q)| {
            let quirk = q.trim();
            let n = quirk.chars().count();
            if n == 0 || n > max_chars {
                return Err(ChatError::invalid(&format!("quirks[{i}]"), format!("must be 1 to {max_chars} characters (got {n})")));
            }
            if quirk.chars().any(char::is_control) {
                return Err(ChatError::invalid(&format!("quirks[{i}]"), "must not contain control characters"));
            }
            Ok(quirk.to_owned())
        })
        .collect()
}

/// One of `allowed_models`; `None` picks the first.
pub fn model(cfg: &ChatConfig, raw: Option<&str>) -> Result<String, ChatError> {
    match raw {
        Some(m) if cfg.allowed_models.iter().any(|k| k == m) => Ok(m.to_owned()),
        Some(m) => Err(ChatError::invalid("model", format!("{m:?} is not a model this server knows (known: {})", known(&cfg.allowed_models)))),
        None => cfg
            .allowed_models
            .first()
            .cloned()
            .ok_or_else(|| ChatError::invalid("model", "this server has no models configured (chat.allowed_models)")),
    }
}

/// Each one of `allowed_tools`, none twice.
pub fn tools(cfg: &ChatConfig, raw: &[String]) -> Result<Vec<String>, ChatError> {
    let mut seen = HashSet::with_capacity(raw.len());
    for tool in raw {
        if !cfg.allowed_tools.iter().any(|k| k == tool) {
            return Err(ChatError::invalid(
                "tools",
                format!("{tool:?} is not a tool this server knows (known: {})", known(&cfg.allowed_tools)),
            ));
        }
        if !seen.insert(tool.as_str()) {
            return Err(ChatError::invalid("tools", format!("{tool:?} is listed twice")));
        }
    }
    Ok(raw.to_vec())
}

fn known(list: &[String]) -> String {
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ChatError) -> String {
        match e {
            ChatError::Invalid(m) => m.split(':').next().unwrap_or_default().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names() {
        let c = ChatConfig::default();
        assert_eq!(name(&c, "  Helper Bot_1-a ").unwrap(), "Helper Bot_1-a");
        assert!(name(&c, &"n".repeat(50)).is_ok());
        assert_eq!(field(name(&c, &"n".repeat(51)).unwrap_err()), "name");
        for bad in ["", "   ", "héllo", "a.b", "tab\there", "emoji🙂"] {
            assert!(name(&c, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn personas_and_quirks() {
        let c = ChatConfig::default();
        assert!(persona(&c, &"p".repeat(9)).is_err());
        assert!(persona(&c, &"p".repeat(10)).is_ok());
        assert!(persona(&c, &format!("  {}  ", "p".repeat(10))).is_ok(), "trimmed before counting");
        assert!(persona(&c, &format!(" {} ", "p".repeat(9))).is_err());
        assert!(persona(&c, &"é".repeat(500)).is_ok(), "characters, not bytes");
        assert!(persona(&c, &"p".repeat(501)).is_err());
        assert!(persona(&c, "line one\nline two\tok").is_ok());
        assert!(persona(&c, "has a NUL \0 in it").is_err());

        let q = |n: usize, len: usize| vec!["q".repeat(len); n];
        assert!(quirks(&c, &q(10, 100)).is_ok());
        assert_eq!(field(quirks(&c, &q(11, 1)).unwrap_err()), "quirks");
        assert_eq!(field(quirks(&c, &q(2, 101)).unwrap_err()), "quirks[0]");
        assert_eq!(field(quirks(&c, &["ok".into(), "  ".into()]).unwrap_err()), "quirks[1]");
        assert_eq!(quirks(&c, &[" terse ".into()]).unwrap(), vec!["terse".to_string()]);
    }

    #[test]
    fn models_and_tools() {
        let c = ChatConfig::default();
        assert_eq!(model(&c, None).unwrap(), "demo");
        assert_eq!(model(&c, Some("demo")).unwrap(), "demo");
        assert_eq!(field(model(&c, Some("gpt-9")).unwrap_err()), "model");
        let none = ChatConfig { allowed_models: vec![], ..ChatConfig::default() };
        assert!(model(&none, None).is_err());
        assert!(tools(&c, &[]).unwrap().is_empty());
        assert_eq!(tools(&c, &["clock".into(), "calculator".into()]).unwrap().len(), 2);
        assert_eq!(field(tools(&c, &["shell".into()]).unwrap_err()), "tools");
        assert!(tools(&c, &["clock".into(), "clock".into()]).is_err());
    }
}
