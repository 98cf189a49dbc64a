//! The core's Prometheus metrics (prefix `chorus_`, added by the registry).
//!
//! Hot-path counters are resolved once per label value at start, so counting
//! an event costs one atomic add.

use std::sync::Arc;

use chorus_protocol::{CloseCode, EventType};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ids::Transport;

type Labels = Vec<(&'static str, String)>;

/// Connection-duration buckets, seconds: 1m, 5m, 15m, 30m, 1h, 4h, 8h, 24h.
pub const CONNECTION_DURATION_BUCKETS: [f64; 8] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 28800.0, 86400.0];

/// Latency buckets, seconds, for request and delivery timings.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone)]
pub struct PerTransport<T> {
    pub websocket: T,
    pub sse: T,
}

impl<T> PerTransport<T> {
    pub fn get(&self, t: Transport) -> &T {
        match t {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
        }
    }
}

// Each `get_or_create` guard must drop before the next call, or the family's lock deadlocks.
fn per_transport<M, C>(family: &Family<Labels, M, C>) -> PerTransport<M>
where
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    let websocket = family.get_or_create(&vec![("transport", "websocket".into())]).clone();
    let sse = family.get_or_create(&vec![("transport", "sse".into())]).clone();
    PerTransport { websocket, sse }
}

/// Counters indexed by event type.
#[derive(Debug, Clone)]
pub struct PerEvent(Arc<[Counter]>);

impl PerEvent {
    fn new(family: &Family<Labels, Counter>) -> Self {
        let mut counters = Vec::with_capacity(EventType::ALL.len());
        for t in EventType::ALL {
            let c = family.get_or_create(&vec![("type", t.as_str().to_owned())]).clone();
            counters.push(c);
        }
        Self(counters.into())
    }

    pub fn inc_by(&self, t: EventType, n: u64) {
        if let Some(i) = EventType::ALL.iter().position(|x| *x == t) {
            self.0[i].inc_by(n);
        }
    }
}

/// Every metric the core updates.
#[derive(Debug, Clone)]
pub struct CoreMetrics {
    pub connections: PerTransport<Gauge>,
    pub connections_opened: PerTransport<Counter>,
    pub connection_duration: PerTransport<Histogram>,
    disconnects: Family<Labels, Counter>,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub events_in: PerEvent,
    pub events_out: PerEvent,
    pub delivery_lag: Histogram,
    pub recoveries: Family<Labels, Counter>,
    pub rate_limited: Family<Labels, Counter>,
    pub errors: Family<Labels, Counter>,
    pub panics: Family<Labels, Counter>,
    pub broker_errors: Counter,
    /// Per command, in the order of `COMMAND_NAMES`.
    commands: Arc<[Histogram]>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl CoreMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let conn_family = Family::<Labels, Gauge>::default();
        let connections = per_transport(&conn_family);
        registry.register("connections", "Open connections by transport", conn_family);

        let opened_family = Family::<Labels, Counter>::default();
        let connections_opened = per_transport(&opened_family);
        registry.register("connections_opened", "Connections accepted and authenticated", opened_family);

        let duration_family = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(CONNECTION_DURATION_BUCKETS)
        });
        let connection_duration = per_transport(&duration_family);
        registry.register("connection_duration_seconds", "How long connections lasted", duration_family);

        let disconnects = Family::<Labels, Counter>::default();
        registry.register("disconnects", "Connections closed, by close reason", disconnects.clone());

        let subscriptions = Gauge::default();
        registry.register("subscriptions", "Subscriptions on this node", subscriptions.clone());
        let channels = Gauge::default();
        registry.register("channels", "Channels with local subscribers", channels.clone());

        let in_family = Family::<Labels, Counter>::default();
        let events_in = PerEvent::new(&in_family);
        registry.register("events_in", "Events published into channel streams from this node, by type", in_family);
        let out_family = Family::<Labels, Counter>::default();
        let events_out = PerEvent::new(&out_family);
        registry.register("events_out", "Events delivered to connections on this node, by type", out_family);

        let delivery_lag = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "broker_delivery_lag_seconds",
            "Time from an event's publication to its fan-out on this node",
            delivery_lag.clone(),
        );
        let recoveries = Family::<Labels, Counter>::default();
        registry.register("recoveries", "Subscriptions with `since`, by outcome", recoveries.clone());
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register("rate_limited", "Requests refused by a rate limit, by scope", rate_limited.clone());
        let errors = Family::<Labels, Counter>::default();
        registry.register("errors", "Errors returned to clients, by endpoint and kind", errors.clone());
        let panics = Family::<Labels, Counter>::default();
        registry.register("panics", "Panics caught in connection and background tasks, by task", panics.clone());
        let broker_errors = Counter::default();
        registry.register("broker_errors", "Broker operations that failed", broker_errors.clone());
        let command_family: Family<Labels, Histogram, fn() -> Histogram> = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let commands: Arc<[Histogram]> = chorus_protocol::command::COMMAND_NAMES
            .iter()
            .map(|name| command_family.get_or_create(&vec![("command", (*name).to_owned())]).clone())
            .collect();
        registry.register(
            "command_duration_seconds",
            "Time to process a client command (e.g. send_message: stored, published, acknowledged), by command",
            command_family,
        );

        Self {
            connections,
            connections_opened,
            connection_duration,
            disconnects,
            subscriptions,
            channels,
            events_in,
            events_out,
            delivery_lag,
            recoveries,
            rate_limited,
            errors,
            panics,
            broker_errors,
            commands,
        }
    }

    /// Metrics that go nowhere, for tests and tools that do not scrape.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn disconnect(&self, code: CloseCode) {
        self.disconnects.get_or_create(&vec![("reason", code.label().to_owned())]).inc();
    }

    pub fn error(&self, endpoint: &str, kind: &str) {
        self.errors.get_or_create(&vec![("endpoint", endpoint.to_owned()), ("kind", kind.to_owned())]).inc();
    }

    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&vec![("scope", scope.to_owned())]).inc();
    }

    pub fn panic(&self, task: &str) {
        self.panics.get_or_create(&vec![("task", task.to_owned())]).inc();
    }

    pub fn command_duration(&self, command: &'static str, elapsed: std::time::Duration) {
        if let Some(i) = chorus_protocol::command::COMMAND_NAMES.iter().position(|n| *n == command) {
            self.commands[i].observe(elapsed.as_secs_f64());
        }
    }

    pub fn recovery(&self, outcome: &'static str) {
        self.recoveries.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }
}

type GaugeFn = Box<dyn Fn() -> i64 + Send + Sync>;

/// Gauges computed at scrape time (queue depths, map sizes), so hot paths
/// keep no shared counters for them.
#[derive(Default)]
pub struct ScrapeGauges(Vec<(&'static str, &'static str, GaugeFn)>);

impl ScrapeGauges {
    pub fn with(mut self, name: &'static str, help: &'static str, f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.0.push((name, help, Box::new(f)));
        self
    }

    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl std::fmt::Debug for ScrapeGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(n, _, _)| n)).finish()
    }
}

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, f) in &self.0 {
            let gauge = ConstGauge::new(f());
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
