//! The runtime's Prometheus metrics (prefix `chorus_`, like every other).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Run durations: a second to ten minutes.
const DURATION_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 600.0];
/// Time to first token: 50 ms to a minute.
const FIRST_TOKEN_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0];

/// Every metric the runtime updates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    runs: Family<Labels, Counter>,
    run_duration: Histogram,
    first_token: Histogram,
    tokens: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub active_runs: Gauge,
    pub queued_runs: Gauge,
    chain_limited: Family<Labels, Counter>,
    dropped: Counter,
    intake_overflow: Counter,
    /// Events dropped after their run's ending, also kept for tests.
    dropped_total: Arc<AtomicU64>,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let runs = Family::<Labels, Counter>::default();
        registry.register("agent_runs", "Agent runs ended, by status and code (`completed` or the agent_error code)", runs.clone());
        let run_duration = Histogram::new(DURATION_BUCKETS);
        registry.register("agent_run_duration_seconds", "Time from a run's start to its ending", run_duration.clone());
        let first_token = Histogram::new(FIRST_TOKEN_BUCKETS);
        registry.register(
            "agent_time_to_first_token_seconds",
            "Time from a run's start to the first streamed piece of its answer or reasoning",
            first_token.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register("agent_tokens", "Tokens used by agent runs, by model and direction (input, output)", tokens.clone());
        let cost = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("agent_cost_usd", "What agent runs cost, by model (US dollars)", cost.clone());
        let active_runs = Gauge::default();
        registry.register("agent_runs_active", "Agent runs executing on this node", active_runs.clone());
        let queued_runs = Gauge::default();
        registry.register("agent_runs_queued", "Agent runs waiting for their turn on this node", queued_runs.clone());
        let chain_limited = Family::<Labels, Counter>::default();
        registry.register(
            "agent_chain_limited",
            "Agent triggers stopped by the loop guard, by reason (hops, rate)",
            chain_limited.clone(),
        );
        let dropped = Counter::default();
        registry.register("agent_events_dropped", "Run events dropped because their run had already ended", dropped.clone());
        let intake_overflow = Counter::default();
        registry.register(
            "agent_intake_overflow",
            "Run notifications that did not fit the runtime's intake (the run is found in the store instead)",
            intake_overflow.clone(),
        );
        AgentMetrics {
            runs,
            run_duration,
            first_token,
            tokens,
            cost,
            active_runs,
            queued_runs,
            chain_limited,
            dropped,
            intake_overflow,
            dropped_total: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn run_ended(&self, status: &str, code: &str, duration: Option<std::time::Duration>) {
        self.runs.get_or_create(&vec![("status", status.to_owned()), ("code", code.to_owned())]).inc();
        if let Some(d) = duration {
            self.run_duration.observe(d.as_secs_f64());
        }
    }

    pub fn first_token(&self, after: std::time::Duration) {
        self.first_token.observe(after.as_secs_f64());
    }

    pub fn usage(&self, model: &str, input: u64, output: u64, cost_usd: f64) {
        self.tokens.get_or_create(&vec![("model", model.to_owned()), ("direction", "input".to_owned())]).inc_by(input);
        self.tokens.get_or_create(&vec![("model", model.to_owned()), ("direction", "output".to_owned())]).inc_by(output);
        if cost_usd > 0.0 {
            self.cost.get_or_create(&vec![("model", model.to_owned())]).inc_by(cost_usd);
        }
    }

    pub fn chain_limited(&self, reason: &str) {
        self.chain_limited.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    pub fn event_dropped(&self) {
        self.dropped.inc();
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Events dropped after their run's ending, since start.
    pub fn events_dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    pub fn intake_overflow(&self) {
        self.intake_overflow.inc();
    }
}
