//! From verified claims to an [`Identity`]: time checks, audience, issuer and
//! the claim mapping for external identity providers.

use chorus_core::{Identity, TokenError, UserId};
use chorus_protocol::ChannelName;
use chorus_protocol::channel::{MAX_ID_LEN, valid_namespace};
use serde_json::{Map, Value};

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// Longest session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 256;

/// True when `id` can name a user: 1-128 characters of `A-Z a-z 0-9 _ . : @ -`.
/// The user's personal channel is `user:<id>`, so this is the channel id syntax.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

/// Checks one channel grant: an exact channel name, or `namespace:prefix*`
/// (`namespace:*` grants the whole namespace). Returns why it is refused.
pub fn validate_grant(grant: &str) -> Result<(), String> {
    match grant.strip_suffix('*') {
        None => ChannelName::parse(grant).map(|_| ()).map_err(|e| e.to_string()),
        Some(prefix) => {
            let Some((ns, id_prefix)) = prefix.split_once(':') else {
                return Err("a wildcard grant must look like `namespace:prefix*`".into());
            };
            if !valid_namespace(ns) {
                return Err("channel namespace must be 1-32 characters of a-z, 0-9, `_` or `-`, starting with a letter".into());
            }
            // The prefix may be empty (`ns:*`); otherwise it must be the start of a valid id.
            if id_prefix.len() >= MAX_ID_LEN || (!id_prefix.is_empty() && ChannelName::from_parts(ns, id_prefix).is_err()) {
                return Err("the prefix before `*` is not the start of a valid channel id".into());
            }
            Ok(())
        }
    }
}

/// What a verified token's claims must satisfy and where the identity is.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub audience: Vec<String>,
    pub issuer: Option<String>,
    pub leeway_ms: i64,
    pub require_exp: bool,
    pub user_claim: String,
    pub channels_claim: String,
    pub session_claim: String,
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

impl ClaimRules {
    /// Checks time, audience and issuer, then maps the claims to an identity.
    /// Call only after the signature verified.
    pub fn identity(&self, claims: &Map<String, Value>, now_ms: i64) -> Result<Identity, TokenError> {
        let exp_ms = match claims.get("exp") {
            None | Some(Value::Null) if self.require_exp => return Err(invalid("token has no `exp` claim")),
            None | Some(Value::Null) => None,
            Some(v) => Some(numeric_date_ms(v).ok_or_else(|| invalid("`exp` is not a number of seconds"))?),
        };
        if let Some(exp) = exp_ms
            && now_ms >= exp.saturating_add(self.leeway_ms)
        {
            return Err(TokenError::Expired);
        }
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = numeric_date_ms(v).ok_or_else(|| invalid("`nbf` is not a number of seconds"))?;
                if now_ms.saturating_add(self.leeway_ms) < nbf {
                    return Err(invalid("token is not valid yet (`nbf` is in the future)"));
                }
            }
        }
        self.check_audience(claims.get("aud"))?;
        self.check_issuer(claims.get("iss"))?;

        let user = self.user_id(claims)?;
        let grants = self.grants(claims)?;
        let session_id = self.session_id(claims)?;
        Ok(Identity { user_id: UserId::new(user), expires_at_ms: exp_ms, leeway_ms: self.leeway_ms, grants, session_id })
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), TokenError> {
        if self.audience.is_empty() {
            return Ok(());
        }
        let accepted = |a: &str| self.audience.iter().any(|want| want == a);
        let ok = match aud {
            None | Some(Value::Null) => return Err(invalid("token has no `aud` claim")),
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(items)) => items.iter().any(|a| a.as_str().is_some_and(accepted)),
            Some(_) => return Err(invalid("`aud` must be a string or an array of strings")),
        };
        if ok { Ok(()) } else { Err(invalid("token audience is not accepted")) }
    }

    fn check_issuer(&self, iss: Option<&Value>) -> Result<(), TokenError> {
        let Some(want) = &self.issuer else { return Ok(()) };
        match iss {
            None | Some(Value::Null) => Err(invalid("token has no `iss` claim")),
            Some(Value::String(got)) if got == want => Ok(()),
            Some(Value::String(_)) => Err(invalid("token issuer is not accepted")),
            Some(_) => Err(invalid("`iss` must be a string")),
        }
    }

    fn user_id(&self, claims: &Map<String, Value>) -> Result<String, TokenError> {
        let name = &self.user_claim;
        let user = match claims.get(name) {
            None | Some(Value::Null) => return Err(invalid(format!("token has no `{name}` claim (the user id)"))),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(invalid(format!("`{name}` (the user id) must be a string or an integer"))),
        };
        if !valid_user_id(&user) {
            return Err(invalid(format!(
                "`{name}` (the user id) must be 1-{MAX_USER_ID_LEN} characters of A-Z, a-z, 0-9, `_`, `.`, `:`, `@` or `-`"
            )));
        }
        Ok(user)
    }

    fn grants(&self, claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
        let name = &self.channels_claim;
        let items = match claims.get(name) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(invalid(format!("`{name}` (channel grants) must be an array of strings"))),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let grant = item.as_str().ok_or_else(|| invalid(format!("`{name}`[{i}] is not a string")))?;
                validate_grant(grant).map_err(|why| invalid(format!("`{name}`[{i}] is not a valid channel grant: {why}")))?;
                Ok(grant.to_owned())
            })
            .collect()
    }

    fn session_id(&self, claims: &Map<String, Value>) -> Result<Option<String>, TokenError> {
        let name = &self.session_claim;
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SESSION_ID_LEN && !s.chars().any(char::is_control) => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(invalid(format!("`{name}` (the session id) must be a string of 1-{MAX_SESSION_ID_LEN} printable characters"))),
        }
    }
}

/// A JWT NumericDate (seconds since the epoch, possibly fractional) in
/// milliseconds; `None` when it is not a number or out of range.
fn numeric_date_ms(v: &Value) -> Option<i64> {
    // Far beyond any real date; keeps the arithmetic below from overflowing.
    const MAX_SECS: i64 = 1 << 40;
    let n = v.as_number()?;
    if let Some(secs) = n.as_i64() {
        return (secs.abs() <= MAX_SECS).then(|| secs * 1000);
    }
    let secs = n.as_f64()?;
    (secs.is_finite() && secs.abs() <= MAX_SECS as f64).then(|| (secs * 1000.0).floor() as i64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: Vec::new(),
            issuer: None,
            leeway_ms: 30_000,
            require_exp: true,
            user_claim: "sub".into(),
            channels_claim: "channels".into(),
            session_claim: "sid".into(),
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn user_ids() {
        for ok in ["a", "alice", "alice@example.com", "auth0:x", "A-Z_0.9", &"x".repeat(128)] {
            assert!(valid_user_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "a|b", "é", "a\n", "a*", &"x".repeat(129)] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn grants() {
        for ok in ["room:general", "room:*", "room:gen*", "user:alice@x.y", "a:b:c*"] {
            assert_eq!(validate_grant(ok), Ok(()), "{ok}");
        }
        for bad in ["*", "room", "room*", "Room:*", ":x", "room:", "room:a b", "room:**", "room:a*b", "*:x", "room:a;*"] {
            assert!(validate_grant(bad).is_err(), "{bad}");
        }
        let long = format!("room:{}*", "x".repeat(MAX_ID_LEN));
        assert!(validate_grant(&long).is_err());
    }

    #[test]
    fn maps_identity() {
        let id = rules().identity(&map(json!({"sub": "alice", "exp": 1_700_000_060, "channels": ["room:*"], "sid": "s1"})), NOW).unwrap();
        assert_eq!(id.user_id.as_str(), "alice");
        assert_eq!(id.expires_at_ms, Some(1_700_000_060_000));
        assert_eq!(id.grants, vec!["room:*".to_owned()]);
        assert_eq!(id.session_id.as_deref(), Some("s1"));

        // Integer user ids, fractional exp, custom claim names.
        let r =
            ClaimRules { user_claim: "uid".into(), channels_claim: "https://x.io/ch".into(), session_claim: "session".into(), ..rules() };
        let id = r.identity(&map(json!({"uid": 42, "exp": 1_700_000_060.5, "https://x.io/ch": ["news:a"], "session": "z"})), NOW).unwrap();
        assert_eq!(id.user_id.as_str(), "42");
        assert_eq!(id.expires_at_ms, Some(1_700_000_060_500));
        assert_eq!(id.grants, vec!["news:a".to_owned()]);
        assert_eq!(id.session_id.as_deref(), Some("z"));
    }

    #[test]
    fn time_checks_use_leeway() {
        let r = rules();
        // Expired 10 s ago: inside the 30 s leeway.
        assert!(r.identity(&map(json!({"sub": "a", "exp": 1_699_999_990})), NOW).is_ok());
        assert_eq!(r.identity(&map(json!({"sub": "a", "exp": 1_699_999_960})), NOW), Err(TokenError::Expired));
        assert!(r.identity(&map(json!({"sub": "a", "exp": 1_700_000_100, "nbf": 1_700_000_020})), NOW).is_ok());
        let e = r.identity(&map(json!({"sub": "a", "exp": 1_700_000_100, "nbf": 1_700_000_031})), NOW).unwrap_err();
        assert!(matches!(e, TokenError::Invalid(ref m) if m.contains("nbf")), "{e:?}");
        let e = r.identity(&map(json!({"sub": "a", "exp": "soon"})), NOW).unwrap_err();
        assert!(matches!(e, TokenError::Invalid(ref m) if m.contains("exp")), "{e:?}");
        let e = r.identity(&map(json!({"sub": "a"})), NOW).unwrap_err();
        assert!(matches!(e, TokenError::Invalid(ref m) if m.contains("exp")), "{e:?}");
        let lax = ClaimRules { require_exp: false, ..rules() };
        assert_eq!(lax.identity(&map(json!({"sub": "a"})), NOW).unwrap().expires_at_ms, None);
    }

    #[test]
    fn audience_and_issuer() {
        let r = ClaimRules { audience: vec!["chorus".into(), "other".into()], issuer: Some("https://idp".into()), ..rules() };
        let ok = json!({"sub": "a", "exp": 1_700_000_100, "aud": ["x", "other"], "iss": "https://idp"});
        assert!(r.identity(&map(ok), NOW).is_ok());
        for (claims, needle) in [
            (json!({"sub": "a", "exp": 1_700_000_100, "aud": "x", "iss": "https://idp"}), "audience"),
            (json!({"sub": "a", "exp": 1_700_000_100, "iss": "https://idp"}), "aud"),
            (json!({"sub": "a", "exp": 1_700_000_100, "aud": 5, "iss": "https://idp"}), "aud"),
            (json!({"sub": "a", "exp": 1_700_000_100, "aud": "chorus", "iss": "https://evil"}), "issuer"),
            (json!({"sub": "a", "exp": 1_700_000_100, "aud": "chorus"}), "iss"),
        ] {
            let e = r.identity(&map(claims.clone()), NOW).unwrap_err();
            assert!(matches!(e, TokenError::Invalid(ref m) if m.contains(needle)), "{claims} -> {e:?}");
        }
        // No audience configured: `aud` is not looked at.
        assert!(rules().identity(&map(json!({"sub": "a", "exp": 1_700_000_100, "aud": "x"})), NOW).is_ok());
    }

    #[test]
    fn refuses_bad_identity_claims() {
        let r = rules();
        for claims in [
            json!({"exp": 1_700_000_100}),
            json!({"sub": "a b", "exp": 1_700_000_100}),
            json!({"sub": 1.5, "exp": 1_700_000_100}),
            json!({"sub": ["a"], "exp": 1_700_000_100}),
            json!({"sub": "a", "exp": 1_700_000_100, "channels": "room:*"}),
            json!({"sub": "a", "exp": 1_700_000_100, "channels": ["room:*", 5]}),
            json!({"sub": "a", "exp": 1_700_000_100, "channels": ["*"]}),
            json!({"sub": "a", "exp": 1_700_000_100, "sid": 5}),
            json!({"sub": "a", "exp": 1_700_000_100, "sid": ""}),
        ] {
            assert!(matches!(r.identity(&map(claims.clone()), NOW), Err(TokenError::Invalid(_))), "{claims}");
        }
    }
}
