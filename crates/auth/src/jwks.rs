//! A JSON Web Key Set fetched over HTTP: cached, refreshed in the background
//! when stale, refetched when a token names an unknown `kid` (rate-limited).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::AuthConfigError;
use crate::keys::{VerifyKey, parse_key_set};

/// Most keys kept from one key set; the rest are ignored.
pub const MAX_JWKS_KEYS: usize = 64;
/// Largest key set document accepted, in bytes.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct JwksSource {
    url: reqwest::Url,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    state: Mutex<State>,
    /// Held while fetching, so that concurrent callers share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    keys: Arc<[VerifyKey]>,
    last_success: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Set when the most recent attempt failed.
    last_error: Option<String>,
    /// Completed attempts; lets a caller that waited for the fetch lock see
    /// that someone else fetched meanwhile.
    attempts: u64,
    background: bool,
}

/// The cached keys at one moment.
pub(crate) struct Snapshot {
    pub keys: Arc<[VerifyKey]>,
    /// The most recent fetch failed, so a missing key may exist upstream.
    pub failing: bool,
}

impl JwksSource {
    pub fn new(url: &str, refresh: Duration, min_refetch: Duration) -> Result<Self, AuthConfigError> {
        let url = reqwest::Url::parse(url).map_err(|e| AuthConfigError::JwksUrl(format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                let loopback = match url.host_str() {
                    Some("localhost") => true,
                    Some(h) => h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
                    None => false,
                };
                if !loopback {
                    tracing::warn!("auth.jwks_url uses plain http: anyone on the network path can substitute signing keys; use https");
                }
            }
            other => return Err(AuthConfigError::JwksUrl(format!("scheme `{other}` is not supported (use https)"))),
        }
        // reqwest panics when building a client with no rustls provider installed.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(AuthConfigError::JwksUrl(
                "no TLS crypto provider is installed in this process (install rustls' ring provider before building the verifier)".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthConfigError::JwksUrl(format!("building the HTTP client: {e}")))?;
        Ok(Self { url, client, refresh, min_refetch, state: Mutex::new(State::default()), fetching: tokio::sync::Mutex::new(()) })
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock();
        Snapshot { keys: st.keys.clone(), failing: st.last_error.is_some() }
    }

    /// The keys, fetched first if there are none yet. Stale keys are returned
    /// as they are while a background task refreshes them, so that a slow
    /// identity provider does not slow down every connection.
    pub async fn current(self: &Arc<Self>) -> Snapshot {
        let now = Instant::now();
        let (due, cached, seq) = {
            let st = self.state.lock();
            let stale = st.last_success.is_none_or(|t| now.duration_since(t) >= self.refresh);
            // After a failure, wait before trying again.
            let backed_off = st.last_error.is_none() || st.last_attempt.is_none_or(|t| now.duration_since(t) >= self.min_refetch);
            (stale && backed_off, !st.keys.is_empty(), st.attempts)
        };
        if due {
            if cached && let Ok(runtime) = tokio::runtime::Handle::try_current() {
                self.spawn_refresh(&runtime, seq);
            } else {
                self.fetch_unless_done_since(seq).await;
            }
        }
        self.snapshot()
    }

    /// Refetches because a token named a `kid` not in the cache. Returns
    /// false without fetching when the last attempt was less than
    /// `min_refetch` ago: forged `kid`s must not drive fetches.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let (allowed, seq) = {
            let st = self.state.lock();
            (st.last_attempt.is_none_or(|t| t.elapsed() >= self.min_refetch), st.attempts)
        };
        if allowed {
            self.fetch_unless_done_since(seq).await;
        }
        allowed
    }

    fn spawn_refresh(self: &Arc<Self>, runtime: &tokio::runtime::Handle, seq: u64) {
        {
            let mut st = self.state.lock();
            if st.background {
                return;
            }
            st.background = true;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            // Clears the flag even if the task is cancelled or panics.
            struct Done(Arc<JwksSource>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.state.lock().background = false;
                }
            }
            let done = Done(this);
            done.0.fetch_unless_done_since(seq).await;
        });
    }

    async fn fetch_unless_done_since(&self, seq: u64) {
        let _one_at_a_time = self.fetching.lock().await;
        if self.state.lock().attempts != seq {
            return;
        }
        let _ = self.fetch_locked().await;
    }

    /// Fetches the key set now (after any fetch in flight) and replaces the
    /// cache on success. A failed fetch, or a set without usable keys, keeps
    /// the cached keys.
    pub async fn fetch(&self) -> Result<usize, String> {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_locked().await
    }

    /// [`JwksSource::fetch`] for a caller that holds `fetching`.
    async fn fetch_locked(&self) -> Result<usize, String> {
        let started = Instant::now();
        let result = self.download().await.and_then(|body| {
            let set = parse_key_set(&body, MAX_JWKS_KEYS)?;
            if !set.skipped.is_empty() {
                tracing::debug!(skipped = ?set.skipped, "JWKS entries ignored");
            }
            if set.over_limit > 0 {
                tracing::warn!(kept = set.keys.len(), ignored = set.over_limit, "the JWKS has more keys than are kept");
            }
            if set.keys.is_empty() {
                return Err(format!("no usable signing key in the key set ({} entries ignored)", set.skipped.len()));
            }
            Ok(set.keys)
        });
        let mut st = self.state.lock();
        st.attempts += 1;
        st.last_attempt = Some(started);
        match result {
            Ok(keys) => {
                let n = keys.len();
                tracing::debug!(keys = n, "JWKS fetched");
                st.keys = keys.into();
                st.last_success = Some(started);
                st.last_error = None;
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, cached_keys = st.keys.len(), "JWKS fetch failed");
                st.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the body: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
