//! Metrics of the Redis engine: its state, reconnects, publish latency and
//! the lag of pub/sub deliveries.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct RedisMetrics {
    /// 1 while Redis is reachable and the engine is in sync, 0 while degraded.
    pub up: Gauge,
    /// Times the engine went degraded.
    pub degraded: Counter,
    /// Times the engine came back (resubscribed and resynced).
    pub recoveries: Counter,
    /// Publish script round trips, seconds.
    pub publish_latency: Histogram,
    /// From an event's publish time to its arrival over pub/sub, seconds.
    pub pubsub_lag: Histogram,
    /// Pub/sub messages lost to a full buffer (each triggers a resync).
    pub pubsub_lost: Counter,
    /// Publications served by the local fallback while degraded.
    pub local_publishes: Counter,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        Self {
            up: Gauge::default(),
            degraded: Counter::default(),
            recoveries: Counter::default(),
            publish_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            pubsub_lag: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            pubsub_lost: Counter::default(),
            local_publishes: Counter::default(),
        }
    }
}

impl RedisMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("redis");
        r.register("up", "1 while Redis is reachable and this node is in sync with it", self.up.clone());
        r.register("degraded", "Times this node lost Redis and went degraded", self.degraded.clone());
        r.register("recoveries", "Times this node resynced with Redis after a loss", self.recoveries.clone());
        r.register("publish_latency_seconds", "Publish script round trips", self.publish_latency.clone());
        r.register("pubsub_lag_seconds", "From an event's publish time to its arrival over pub/sub", self.pubsub_lag.clone());
        r.register("pubsub_lost", "Pub/sub messages lost to a full buffer", self.pubsub_lost.clone());
        r.register("local_publishes", "Publications delivered only on this node while degraded", self.local_publishes.clone());
    }
}
