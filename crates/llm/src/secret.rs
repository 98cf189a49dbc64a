//! API keys: read from the environment variable a model names, kept out of
//! every log line, error, `Debug` output and serialized value.

use std::collections::HashMap;

/// A provider credential. Not `Serialize`; `Debug` prints no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Where API keys come from: the process environment in the server, a map in tests.
pub trait SecretSource: Send + Sync {
    fn get(&self, name: &str) -> Option<ApiKey>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<ApiKey> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(ApiKey)
    }
}

/// Fixed keys (tests, embedding).
#[derive(Default, Clone)]
pub struct SecretMap(pub HashMap<String, String>);

impl std::fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl SecretSource for SecretMap {
    fn get(&self, name: &str) -> Option<ApiKey> {
        self.0.get(name).map(|v| ApiKey(v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
        let map = SecretMap(HashMap::from([(
            "K".to_owned(),
            "sk-very-secret".to_owned(),
        )]));
        assert!(!format!("{map:?}").contains("secret"));
        assert_eq!(map.get("K").unwrap().expose(), "sk-very-secret");
    }
}
