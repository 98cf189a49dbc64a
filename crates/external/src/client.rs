//! Delivering a run to an external agent's webhook: signed, with a timeout,
//! one retry, and the agent's circuit breaker around both attempts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_clock::Clock;
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use reqwest::redirect::Policy;

use crate::address::AddressPolicy;
use crate::breaker::{BreakerOpen, Breakers};
use crate::config::ExternalAgentsConfig;
use crate::metrics::WebhookMetrics;
use crate::resolver::PolicyResolver;
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, signature_header};
use crate::url::WebhookUrl;

/// What goes out: one run for one agent.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub agent_id: &'a str,
    pub url: &'a WebhookUrl,
    /// Current secret first; a rotated one while it is still honoured.
    pub secrets: &'a [SigningSecret],
    /// `webhook-id`: the same on the retry, so receivers can drop a duplicate.
    pub id: &'a str,
    /// The JSON body.
    pub body: Bytes,
}

/// The webhook accepted the delivery (a 2xx answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub attempts: u32,
    pub status: u16,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Address(String),
    #[error("answered with a redirect (HTTP {0}); webhooks are not redirected")]
    Redirect(u16),
}

impl AttemptError {
    /// Worth a second attempt: the service may answer next time.
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Timeout(_) | AttemptError::Connect(_) => true,
            AttemptError::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            AttemptError::Address(_) | AttemptError::Redirect(_) => false,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Connect(_) => "connect",
            AttemptError::Status(_) => "status",
            AttemptError::Address(_) => "address",
            AttemptError::Redirect(_) => "redirect",
        }
    }
}

/// Why a delivery did not reach the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    #[error("the webhook failed after {attempts} attempt(s): {last}")]
    Failed { attempts: u32, last: AttemptError },
}

/// Sends deliveries. Cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    breakers: Breakers,
    timeout: Duration,
    retry_delay: Duration,
    clock: Arc<dyn Clock>,
    metrics: WebhookMetrics,
}

/// The HTTP client could not be built (no TLS provider installed, ...).
#[derive(Debug, thiserror::Error)]
#[error("the webhook HTTP client could not be built: {0}")]
pub struct ClientBuildError(String);

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookClient").field("timeout", &self.timeout).field("breakers", &self.breakers).finish()
    }
}

const AGENT: &str = concat!("Chorus-Webhook/", env!("CARGO_PKG_VERSION"));

impl WebhookClient {
    pub fn new(
        config: &ExternalAgentsConfig,
        policy: Arc<AddressPolicy>,
        clock: Arc<dyn Clock>,
        metrics: WebhookMetrics,
    ) -> Result<Self, ClientBuildError> {
        // reqwest panics when it builds a TLS client with no provider installed.
        if rustls_provider_missing() {
            return Err(ClientBuildError("no TLS crypto provider is installed in this process".into()));
        }
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            // A proxy would resolve names itself, past the address policy.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            http,
            policy,
            breakers: Breakers::new(config.breaker(), clock.clone()),
            timeout: config.timeout,
            retry_delay: config.retry_delay,
            clock,
            metrics,
        })
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Delivers once, retrying once after `retry_delay` when the first
    /// attempt failed in a way a retry may fix. The breaker is asked first
    /// and told the result (a delivery counts once, however many attempts).
    pub async fn deliver(&self, delivery: Delivery<'_>) -> Result<Delivered, DeliveryError> {
        let started = tokio::time::Instant::now();
        let admission = match self.breakers.admit(delivery.agent_id) {
            Ok(a) => a,
            Err(open) => {
                self.metrics.delivery("breaker_open", 0.0);
                return Err(open.into());
            }
        };
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            match self.attempt(&delivery).await {
                Ok(status) => {
                    self.metrics.attempt("ok");
                    break Ok(Delivered { attempts, status });
                }
                Err(e) => {
                    self.metrics.attempt(e.label());
                    tracing::info!(agent_id = delivery.agent_id, url = %delivery.url.redacted(), attempt = attempts, error = %e, "webhook attempt failed");
                    if attempts >= 2 || !e.retryable() {
                        break Err(DeliveryError::Failed { attempts, last: e });
                    }
                    tokio::time::sleep(self.retry_delay).await;
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => {
                admission.succeeded();
                self.metrics.delivery("delivered", seconds);
            }
            Err(_) => {
                if admission.failed() {
                    self.metrics.breaker_opened();
                    tracing::warn!(agent_id = delivery.agent_id, "webhook circuit breaker opened");
                }
                self.metrics.delivery("failed", seconds);
            }
        }
        result
    }

    async fn attempt(&self, d: &Delivery<'_>) -> Result<u16, AttemptError> {
        // Literal addresses never reach the resolver: check them here.
        d.url.check(&self.policy).map_err(|e| AttemptError::Address(format!("the webhook URL {e}")))?;
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let signature = signature_header(d.secrets, d.id, timestamp, &d.body);
        let request = self
            .http
            .post(d.url.as_url().clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(AGENT))
            .header(HEADER_ID, d.id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(d.body.clone());
        let response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        // The body is not read: nothing in it is needed, and reading it would let
        // a slow receiver hold the delivery.
        drop(response);
        if status.is_success() {
            Ok(status.as_u16())
        } else if status.is_redirection() {
            Err(AttemptError::Redirect(status.as_u16()))
        } else {
            Err(AttemptError::Status(status.as_u16()))
        }
    }

    fn classify(&self, e: reqwest::Error) -> AttemptError {
        if e.is_timeout() {
            return AttemptError::Timeout(self.timeout);
        }
        // A refusal of the resolver is the source of a connect error.
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = source {
            if let Some(refused @ crate::resolver::ResolveError::NonPublic { .. }) =
                err.downcast_ref::<crate::resolver::ResolveError>()
            {
                return AttemptError::Address(refused.to_string());
            }
            source = err.source();
        }
        AttemptError::Connect(root_cause(&e))
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn rustls_provider_missing() -> bool {
    rustls::crypto::CryptoProvider::get_default().is_none()
}
