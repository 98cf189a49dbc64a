//! What the generator reads from the server: RSS and CPU from `/proc`,
//! counts from `/health/detailed` and `/metrics`, `/health` latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::http::{HttpConn, get_json};
use crate::util::{Target, rss_kib};

/// Counts the churn and soak scenarios compare against a baseline.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub rss_kib: Option<u64>,
    pub connections: Option<u64>,
    pub subscriptions: Option<u64>,
    pub channels: Option<u64>,
    pub typing: Option<u64>,
    pub limiter_entries: Option<u64>,
    pub outbound_queued: Option<u64>,
    pub tasks: Option<u64>,
    pub presence_channels: Option<u64>,
    pub registered_users: Option<u64>,
    pub broker_streams: Option<u64>,
}

pub struct Probe {
    conn: HttpConn,
    pub pid: Option<u32>,
}

impl Probe {
    pub fn new(target: &Target, pid: Option<u32>) -> Self {
        let mut conn = HttpConn::new(target.clone());
        conn.timeout = Duration::from_secs(10);
        Self { conn, pid }
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid.and_then(rss_kib)
    }

    /// `/health/detailed` and the scrape gauges of `/metrics`.
    pub async fn counts(&mut self) -> anyhow::Result<Counts> {
        let (_, v) = get_json(&mut self.conn, "/health/detailed").await?;
        let hub = &v["checks"]["hub"];
        let n = |k: &str| hub.get(k).and_then(serde_json::Value::as_u64);
        let metrics = self.metrics().await.unwrap_or_default();
        let g = |k: &str| metrics.get(k).map(|v| *v as u64);
        Ok(Counts {
            rss_kib: self.rss_kib().or_else(|| v["checks"]["memory"]["rss_bytes"].as_u64().map(|b| b / 1024)),
            connections: n("connections"),
            subscriptions: n("subscriptions"),
            channels: n("channels"),
            typing: n("typing"),
            limiter_entries: n("limiter_entries"),
            outbound_queued: n("outbound_queued"),
            tasks: n("tasks"),
            presence_channels: g("chorus_presence_channels"),
            registered_users: g("chorus_registered_users"),
            broker_streams: g("chorus_broker_streams"),
        })
    }

    /// Unlabelled samples of `/metrics` (labelled series are skipped).
    pub async fn metrics(&mut self) -> anyhow::Result<BTreeMap<String, f64>> {
        let r = self.conn.request("GET", "/metrics", "", b"").await?;
        let text = String::from_utf8(r.body).context("metrics are not UTF-8")?;
        Ok(parse_metrics(&text))
    }

    /// Time of one `GET /health`, in µs.
    pub async fn health_latency_us(&mut self) -> anyhow::Result<u64> {
        let t = Instant::now();
        let r = self.conn.request("GET", "/health", "", b"").await?;
        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        anyhow::ensure!(r.status == 200, "/health answered {}", r.status);
        Ok(us)
    }

    /// Median of `n` `/health` timings.
    pub async fn health_latency_median_us(&mut self, n: usize) -> Option<u64> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            if let Ok(us) = self.health_latency_us().await {
                v.push(us);
            }
        }
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// Waits until the hub reports `connections` (or fewer); returns the last counts.
    pub async fn wait_connections_at_most(&mut self, target: u64, limit: Duration) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.counts().await?;
            if c.connections.is_some_and(|n| n <= target) || Instant::now() >= deadline {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.contains('{') {
            continue;
        }
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next())
            && let Ok(v) = value.parse::<f64>()
        {
            out.insert(name.to_owned(), v);
        }
    }
    out
}

pub fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text() {
        let m = parse_metrics("# HELP x\n# TYPE x gauge\nchorus_tasks 12\nchorus_http_requests_total{route=\"/\"} 3\nchorus_presence_channels 0\n# EOF\n");
        assert_eq!(m.get("chorus_tasks"), Some(&12.0));
        assert_eq!(m.get("chorus_presence_channels"), Some(&0.0));
        assert_eq!(m.len(), 2);
    }
}
