//! Webhook URLs: what an agent record may name, checked when it is saved.
//!
//! Only the text is checked here (scheme, credentials, IP literals, names
//! that always mean this machine); the addresses a name resolves to are
//! checked again at every delivery (`resolver.rs`), because DNS can change
//! between the two.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::address::AddressPolicy;

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2_048;

/// A webhook URL that passed validation.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a webhook URL was refused (messages are meant for the person who typed it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("is not a valid URL ({0})")]
    Malformed(String),
    #[error("must use http or https, not `{0}`")]
    Scheme(String),
    #[error("must not carry a user name or password (requests are authenticated by their signature)")]
    Credentials,
    #[error("must not have a fragment (`#...`)")]
    Fragment,
    #[error("must name a host")]
    NoHost,
    #[error(
        "points to a loopback, private, link-local or otherwise non-public address ({0}); allow its network in external_agents.allowed_networks to use it"
    )]
    NonPublic(IpAddr),
}

impl WebhookUrl {
    /// Parses and checks a URL against `policy`.
    pub fn parse(text: &str, policy: &AddressPolicy) -> Result<Self, UrlError> {
        if text.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(text.trim()).map_err(|e| UrlError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        let url = Self(url);
        url.check(policy)?;
        Ok(url)
    }

    /// Checks the URL text again against a (possibly reloaded) policy; used
    /// before every delivery, since literal addresses skip DNS.
    pub fn check(&self, policy: &AddressPolicy) -> Result<(), UrlError> {
        match self.literal_or_local_address()? {
            Some(ip) if !policy.permits(ip) => Err(UrlError::NonPublic(ip)),
            _ => Ok(()),
        }
    }

    /// The address an IP-literal host stands for, or the loopback address for
    /// `localhost` names (which resolve locally whatever DNS says).
    fn literal_or_local_address(&self) -> Result<Option<IpAddr>, UrlError> {
        match self.0.host() {
            None => Err(UrlError::NoHost),
            Some(Host::Ipv4(v4)) => Ok(Some(IpAddr::V4(v4))),
            Some(Host::Ipv6(v6)) => Ok(Some(IpAddr::V6(v6))),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(UrlError::NoHost);
                }
                if name == "localhost" || name.ends_with(".localhost") {
                    return Ok(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                }
                if name == "ip6-localhost" || name == "ip6-loopback" {
                    return Ok(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
                }
                Ok(None)
            }
        }
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The URL is user data but not a secret; still, keep query strings (which
/// may hold tokens of the receiver) out of logs.
impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl WebhookUrl {
    /// Scheme, host, port and path: what logs may show.
    pub fn redacted(&self) -> String {
        if self.0.query().is_none() {
            return self.0.to_string();
        }
        let mut shown = self.0.clone();
        shown.set_query(None);
        format!("{shown}?…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<WebhookUrl, UrlError> {
        WebhookUrl::parse(s, &AddressPolicy::default())
    }

    #[test]
    fn accepts_public_http_and_https() {
        assert_eq!(
            parse("https://agents.example.com/hook?v=1").unwrap().as_str(),
            "https://agents.example.com/hook?v=1"
        );
        assert!(parse("http://8.8.8.8:8080/x").is_ok());
        assert!(parse("https://[2606:4700:4700::1111]/x").is_ok());
    }

    #[test]
    fn refuses_what_a_webhook_must_not_be() {
        assert_eq!(parse("ftp://example.com/"), Err(UrlError::Scheme("ftp".into())));
        assert_eq!(parse("file:///etc/passwd"), Err(UrlError::Scheme("file".into())));
        assert_eq!(parse("https://user:pw@example.com/"), Err(UrlError::Credentials));
        assert_eq!(parse("https://example.com/#x"), Err(UrlError::Fragment));
        assert!(matches!(parse("not a url"), Err(UrlError::Malformed(_))));
        assert_eq!(parse(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))), Err(UrlError::TooLong));
        for (url, ip) in [
            ("http://127.0.0.1:9000/", "127.0.0.1"),
            ("http://localhost/", "127.0.0.1"),
            ("http://LOCALHOST./", "127.0.0.1"),
            ("http://api.localhost/", "127.0.0.1"),
            ("http://[::1]/", "::1"),
            ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
            ("http://10.0.0.7/", "10.0.0.7"),
            ("http://192.168.0.1/", "192.168.0.1"),
            // Numeric forms that URL parsing normalizes to an IPv4 address.
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
        ] {
            assert_eq!(parse(url), Err(UrlError::NonPublic(ip.parse().unwrap())), "{url}");
        }
    }

    #[test]
    fn an_allowed_network_opens_its_addresses_and_checks_follow_reloads() {
        let open = AddressPolicy::new(&["127.0.0.0/8"]).unwrap();
        let url = WebhookUrl::parse("http://127.0.0.1:9000/hook", &open).unwrap();
        assert!(url.check(&open).is_ok());
        assert_eq!(url.check(&AddressPolicy::default()), Err(UrlError::NonPublic("127.0.0.1".parse().unwrap())));
        assert!(WebhookUrl::parse("http://localhost:9000/", &open).is_ok());
    }

    #[test]
    fn logs_show_no_query() {
        let url = parse("https://example.com/hook?token=s3cret").unwrap();
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.redacted(), "https://example.com/hook?…");
    }
}
