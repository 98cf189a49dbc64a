//! Webhook metrics, registered by the composition root into the server's
//! registry (whose `chorus_` prefix they get).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Delivery durations, seconds: 10 ms to the 10 s timeout plus a retry.
const DURATION_BUCKETS: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 25.0];

#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    deliveries: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    breaker_opened: Counter,
    duration: Histogram,
}

impl WebhookMetrics {
    /// Registers `webhook_deliveries` (by `outcome`), `webhook_attempts` (by
    /// `result`), `webhook_breaker_opened` and `webhook_delivery_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries to external agents by outcome",
            m.deliveries.clone(),
        );
        registry.register("webhook_attempts", "Webhook delivery attempts by result", m.attempts.clone());
        registry.register(
            "webhook_breaker_opened",
            "Times an external agent's circuit breaker opened",
            m.breaker_opened.clone(),
        );
        registry.register(
            "webhook_delivery_duration_seconds",
            "Webhook delivery time, retries included",
            m.duration.clone(),
        );
        m
    }

    pub fn unregistered() -> Self {
        Self {
            deliveries: Family::default(),
            attempts: Family::default(),
            breaker_opened: Counter::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }

    pub(crate) fn delivery(&self, outcome: &'static str, seconds: f64) {
        self.deliveries.get_or_create(&vec![("outcome", outcome)]).inc();
        if outcome != "breaker_open" {
            self.duration.observe(seconds);
        }
    }

    pub(crate) fn attempt(&self, result: &'static str) {
        self.attempts.get_or_create(&vec![("result", result)]).inc();
    }

    pub(crate) fn breaker_opened(&self) {
        self.breaker_opened.inc();
    }

    /// Deliveries counted with `outcome` (`delivered`, `rejected`, `failed`, `breaker_open`).
    pub fn deliveries(&self, outcome: &'static str) -> u64 {
        self.deliveries.get_or_create(&vec![("outcome", outcome)]).get()
    }

    /// Attempts counted with `result` (`ok`, `status`, `timeout`, `connect`, `address`, `redirect`).
    pub fn attempts(&self, result: &'static str) -> u64 {
        self.attempts.get_or_create(&vec![("result", result)]).get()
    }

    pub fn breaker_opened_total(&self) -> u64 {
        self.breaker_opened.get()
    }
}
