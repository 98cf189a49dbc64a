//! Timeouts, retries and the fallback switch around any [`Provider`].
//!
//! A stream gets `first_byte_timeout` to produce its first event and then
//! `idle_timeout` between events (there is no total limit). A retryable error
//! before any content is retried up to `max_retries` times after a backoff
//! with full jitter, or after the provider's `Retry-After`; then the stream
//! switches once to the fallback model, which gets the same retries. After
//! content has been passed on, every error is final: the caller has shown it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::time::Instant;

use crate::ProviderError;
use crate::config::Resilience;
use crate::event::{EventStream, StreamEvent};
use crate::provider::Provider;
use crate::request::ChatRequest;

/// One model a stream may use: the primary, then the fallback.
#[derive(Clone)]
pub(crate) struct Target {
    /// The configured name (reported in `FellBack`).
    pub name: String,
    pub model_id: String,
    pub max_output_tokens: u32,
    pub provider: Arc<dyn Provider>,
}

impl Resilience {
    /// The wait before retry number `retry` (0-based), or `None` when the
    /// provider asks for a longer wait than we accept.
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if let Some(wait) = retry_after {
            return (wait <= self.max_retry_after).then_some(wait);
        }
        let ceiling = self
            .retry_base_delay
            .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .unwrap_or(self.retry_max_delay)
            .min(self.retry_max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rng.random_range(0..=millis)))
    }
}

pub(crate) fn stream(
    request: ChatRequest,
    targets: Vec<Target>,
    policy: Resilience,
) -> EventStream {
    let state = Resilient {
        request,
        targets,
        policy,
        stage: 0,
        retries: 0,
        current: None,
        deadline: Instant::now(),
        heard_from_provider: false,
        content_sent: false,
        wait_until: None,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
    .boxed()
}

struct Resilient {
    request: ChatRequest,
    targets: Vec<Target>,
    policy: Resilience,
    /// Index into `targets`.
    stage: usize,
    /// Retries used on the current target.
    retries: u32,
    current: Option<EventStream>,
    deadline: Instant,
    /// Whether the current attempt produced any event yet.
    heard_from_provider: bool,
    content_sent: bool,
    wait_until: Option<Instant>,
    done: bool,
}

impl Resilient {
    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(until) = self.wait_until.take() {
                tokio::time::sleep_until(until).await;
            }
            let stream = match self.current.as_mut() {
                Some(stream) => stream,
                None => {
                    let target = self.targets.get(self.stage)?;
                    let mut request = self.request.clone();
                    request.model = target.model_id.clone();
                    request.max_output_tokens =
                        request.max_output_tokens.min(target.max_output_tokens);
                    self.deadline = Instant::now() + self.policy.first_byte_timeout;
                    self.heard_from_provider = false;
                    self.current.insert(target.provider.stream(request))
                }
            };
            let error = match tokio::time::timeout_at(self.deadline, stream.next()).await {
                Err(_) if self.heard_from_provider => {
                    ProviderError::IdleTimeout(self.policy.idle_timeout)
                }
                Err(_) => ProviderError::FirstByteTimeout(self.policy.first_byte_timeout),
                // A provider must end with `Finished` or an error; anything else was cut off.
                Ok(None) => ProviderError::Interrupted,
                Ok(Some(Err(error))) => error,
                Ok(Some(Ok(event))) => {
                    self.heard_from_provider = true;
                    self.deadline = Instant::now() + self.policy.idle_timeout;
                    match &event {
                        StreamEvent::KeepAlive => continue,
                        StreamEvent::Finished { .. } => {
                            self.done = true;
                            self.current = None;
                        }
                        other if other.is_content() => self.content_sent = true,
                        _ => {}
                    }
                    return Some(Ok(event));
                }
            };
            // Dropping the stream closes the connection.
            self.current = None;
            if let Some(event) = self.recover(&error) {
                return Some(Ok(event));
            }
            self.done = true;
            return Some(Err(error));
        }
    }

    /// What to do after `error`: a retry, the fallback, or nothing (final).
    fn recover(&mut self, error: &ProviderError) -> Option<StreamEvent> {
        if self.content_sent || !error.is_retryable() {
            return None;
        }
        if self.retries < self.policy.max_retries
            && let Some(delay) =
                self.policy
                    .backoff(self.retries, error.retry_after(), &mut rand::rng())
        {
            self.retries += 1;
            self.wait_until = Some(Instant::now() + delay);
            tracing::info!(attempt = self.retries, ?delay, code = error.code(), %error, "retrying the model call");
            return Some(StreamEvent::Retrying {
                attempt: self.retries,
                delay,
                code: error.code().to_owned(),
            });
        }
        if self.stage + 1 < self.targets.len() {
            self.stage += 1;
            self.retries = 0;
            let model = self.targets[self.stage].name.clone();
            tracing::warn!(fallback = %model, code = error.code(), %error, "switching to the fallback model");
            return Some(StreamEvent::FellBack {
                model,
                code: error.code().to_owned(),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = Resilience::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for retry in 0..40 {
            let ceiling = (policy.retry_base_delay * 2u32.saturating_pow(retry.min(20)))
                .min(policy.retry_max_delay);
            let delay = policy.backoff(retry, None, &mut rng).unwrap();
            assert!(delay <= ceiling, "retry {retry}: {delay:?} > {ceiling:?}");
        }
        assert_eq!(
            policy.backoff(0, Some(Duration::from_secs(2)), &mut rng),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.backoff(0, Some(Duration::from_secs(3600)), &mut rng),
            None
        );
    }
}
