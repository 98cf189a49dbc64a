//! Publishers: paced lanes over the server publish API, each on its own
//! keep-alive connection, sending one request at a time (so every channel's
//! events reach the server in sequence order). Each event carries its
//! sequence number `s` and the send time `t` (µs), stamped right before the
//! request is written.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;

use crate::http::HttpConn;
use crate::stats::new_histogram;
use crate::util::{Target, now_us};

/// One publisher stream: a channel and the sequence numbers sent into it.
pub struct Feed {
    pub channel: String,
    /// The user the events are for (agent events carry it as `u`).
    pub user: String,
    /// Sequence numbers handed out so far (the next one to use).
    pub next_seq: AtomicU64,
    /// Sequence numbers whose publish was not acknowledged.
    pub failed: Mutex<Vec<u64>>,
}

impl Feed {
    pub fn new(channel: impl Into<String>, user: impl Into<String>) -> Self {
        Self { channel: channel.into(), user: user.into(), next_seq: AtomicU64::new(0), failed: Mutex::new(Vec::new()) }
    }

    pub fn sent(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> Vec<u64> {
        self.failed.lock().clone()
    }
}

/// What events look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `publication` with a padding text of this many bytes.
    Publication(usize),
    /// A cycle of agent-run events (started, thinking, text deltas, tool
    /// call, completed) with `run_id`, `thread_id`, `agent_id`.
    Agent,
}

/// How a lane sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /api/v1/publish`, one event per request.
    Single,
    /// `POST /api/v1/publish/batch`, up to `max` events per request.
    Batch { max: usize },
}

#[derive(Clone, Debug)]
pub struct LaneConfig {
    /// Events per second this lane publishes (over all its feeds).
    pub rate: f64,
    pub tick: Duration,
    pub api: Api,
    pub kind: EventKind,
    /// Delay before the first tick (spreads lanes over a tick).
    pub phase: Duration,
}

/// What a lane did.
pub struct LaneStats {
    pub requests: u64,
    pub failed_requests: u64,
    pub events_ok: u64,
    pub events_failed: u64,
    /// Request round trips, µs.
    pub request_us: Histogram<u64>,
    /// How late each tick started against its schedule, µs.
    pub lag_us: Histogram<u64>,
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl Default for LaneStats {
    fn default() -> Self {
        Self {
            requests: 0,
            failed_requests: 0,
            events_ok: 0,
            events_failed: 0,
            request_us: new_histogram(),
            lag_us: new_histogram(),
            errors: Default::default(),
        }
    }
}

impl LaneStats {
    pub fn merge(&mut self, o: &LaneStats) {
        self.requests += o.requests;
        self.failed_requests += o.failed_requests;
        self.events_ok += o.events_ok;
        self.events_failed += o.events_failed;
        let _ = self.request_us.add(&o.request_us);
        let _ = self.lag_us.add(&o.lag_us);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn line(&self) -> String {
        let q = |h: &Histogram<u64>, p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
        format!(
            "published {} events ok, {} failed, in {} requests ({} failed); request p50 {} p99 {} max {}; publisher lag p99 {} max {}{}",
            self.events_ok,
            self.events_failed,
            self.requests,
            self.failed_requests,
            crate::stats::ms(q(&self.request_us, 0.5)),
            crate::stats::ms(q(&self.request_us, 0.99)),
            crate::stats::ms(self.request_us.max()),
            crate::stats::ms(q(&self.lag_us, 0.99)),
            crate::stats::ms(self.lag_us.max()),
            if self.errors.is_empty() { String::new() } else { format!("; errors {:?}", self.errors) }
        )
    }
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<ItemResult>,
}

#[derive(Deserialize)]
struct ItemResult {
    #[serde(default)]
    offset: Option<u64>,
}

/// Runs one lane over `feeds[mine]` (round robin) until `stop` or `duration`.
pub async fn run_lane(
    target: Target,
    api_key: Arc<str>,
    feeds: Arc<Vec<Feed>>,
    mine: Vec<usize>,
    cfg: LaneConfig,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> LaneStats {
    let mut stats = LaneStats::default();
    if mine.is_empty() || cfg.rate <= 0.0 {
        return stats;
    }
    let mut conn = HttpConn::new(target);
    let head_batch = format!("X-API-Key: {api_key}\r\nContent-Type: application/json\r\n");
    let start = Instant::now() + cfg.phase;
    // The count is what the row asks for; a publisher slowed down by the
    // server finishes it late (lag shows it), within a bounded grace.
    let end = start + duration + duration / 2 + Duration::from_secs(5);
    let mut next = start;
    let mut sent: u64 = 0;
    let mut rr = 0usize;
    let mut body = Vec::with_capacity(64 * 1024);
    let mut batch: Vec<(usize, u64)> = Vec::new();
    let total = (cfg.rate * duration.as_secs_f64()).round() as u64;
    loop {
        tokio::time::sleep_until(next).await;
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || now >= end || sent >= total {
            break;
        }
        stats.lag_us.saturating_record(u64::try_from((now - next).as_micros()).unwrap_or(u64::MAX).max(1));
        // Everything due by now (catches up after a slow request).
        let due = ((cfg.rate * (now - start).as_secs_f64()) as u64 + 1).min(total);
        let max = match cfg.api {
            Api::Single => 1,
            Api::Batch { max } => max,
        };
        while sent < due {
            let n = (due - sent).min(max as u64) as usize;
            batch.clear();
            for _ in 0..n {
                let f = mine[rr % mine.len()];
                rr += 1;
                let seq = feeds[f].next_seq.fetch_add(1, Ordering::AcqRel);
                batch.push((f, seq));
            }
            let t = now_us();
            body.clear();
            let path = match cfg.api {
                Api::Single => {
                    let (f, seq) = batch[0];
                    write_event(&mut body, &feeds[f], seq, t, cfg.kind);
                    "/api/v1/publish"
                }
                Api::Batch { .. } => {
                    body.extend_from_slice(b"{\"items\":[");
                    for (i, (f, seq)) in batch.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        write_event(&mut body, &feeds[*f], *seq, t, cfg.kind);
                    }
                    body.extend_from_slice(b"]}");
                    "/api/v1/publish/batch"
                }
            };
            let sent_at = std::time::Instant::now();
            let result = conn.request("POST", path, &head_batch, &body).await;
            stats.request_us.saturating_record(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
            stats.requests += 1;
            let ok: Vec<bool> = match result {
                Ok(r) if r.status == 200 => match cfg.api {
                    Api::Single => vec![true],
                    Api::Batch { .. } => match serde_json::from_slice::<BatchResponse>(&r.body) {
                        Ok(b) if b.results.len() == batch.len() => b.results.iter().map(|x| x.offset.is_some()).collect(),
                        _ => {
                            *stats.errors.entry("bad batch response".into()).or_default() += 1;
                            vec![false; batch.len()]
                        }
                    },
                },
                Ok(r) => {
                    stats.failed_requests += 1;
                    let snippet = String::from_utf8_lossy(&r.body[..r.body.len().min(120)]).to_string();
                    *stats.errors.entry(format!("http {}: {snippet}", r.status)).or_default() += 1;
                    vec![false; batch.len()]
                }
                Err(e) => {
                    stats.failed_requests += 1;
                    *stats.errors.entry(format!("{e:#}")).or_default() += 1;
                    vec![false; batch.len()]
                }
            };
            for ((f, seq), ok) in batch.iter().zip(ok) {
                if ok {
                    stats.events_ok += 1;
                } else {
                    stats.events_failed += 1;
                    feeds[*f].failed.lock().push(*seq);
                }
            }
            sent += n as u64;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        next += cfg.tick;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
    stats
}

/// Splits feeds over `lanes` lanes (feed i goes to lane i % lanes) and runs
/// them, `rate` events/s in total. Lane l publishes to `targets[l % n]`.
#[allow(clippy::too_many_arguments)] // the lane plan, passed through as is
pub async fn run_lanes(
    targets: &[Target],
    api_key: &Arc<str>,
    feeds: &Arc<Vec<Feed>>,
    lanes: usize,
    rate: f64,
    tick: Duration,
    api: Api,
    kind: EventKind,
    duration: Duration,
    stop: &Arc<AtomicBool>,
) -> LaneStats {
    let lanes = lanes.clamp(1, feeds.len().max(1));
    let mut handles = Vec::new();
    for l in 0..lanes {
        let mine: Vec<usize> = (l..feeds.len()).step_by(lanes).collect();
        let share = rate * mine.len() as f64 / feeds.len() as f64;
        let cfg = LaneConfig { rate: share, tick, api, kind, phase: tick.mul_f64(l as f64 / lanes as f64) };
        let target = targets[l % targets.len()].clone();
        handles.push(tokio::spawn(run_lane(target, api_key.clone(), feeds.clone(), mine, cfg, duration, stop.clone())));
    }
    let mut all = LaneStats::default();
    for h in handles {
        match h.await {
            Ok(s) => all.merge(&s),
            Err(e) => *all.errors.entry(format!("lane task: {e}")).or_default() += 1,
        }
    }
    all
}

/// One publish item: `{"channel":..,"event":..,"data":{..}}`.
pub fn write_event(out: &mut Vec<u8>, feed: &Feed, seq: u64, t: u64, kind: EventKind) {
    let ch = &feed.channel;
    let _ = match kind {
        EventKind::Publication(pad) => {
            let _ = write!(out, r#"{{"channel":"{ch}","event":"publication","data":{{"s":{seq},"t":{t},"text":""#);
            out.extend(std::iter::repeat_n(b'x', pad));
            write!(out, r#""}}}}"#)
        }
        EventKind::Agent => {
            // A run of 50 events: started, thinking, 44 deltas, a tool call, one
            // more delta, completed. Each run has its own id.
            let (run, k) = (seq / 50, seq % 50);
            let (event, extra) = match k {
                0 => ("agent_started", r#","model":"bench-model""#),
                1 => ("agent_thinking", r#","thought":"looking at the question""#),
                46 => ("tool_executing", r#","call_id":"c1","tool":"search","arguments":{"q":"chorus"}"#),
                47 => ("tool_completed", r#","call_id":"c1","tool":"search","result":"3 hits","is_error":false"#),
                49 => ("agent_completed", r#","text":"done""#),
                _ => ("agent_text_delta", r#","message_id":"m1","delta":"lorem ipsum ""#),
            };
            let u = &feed.user;
            // `seq`: the event's place in its run, from 1.
            let run_seq = k + 1;
            write!(
                out,
                r#"{{"channel":"{ch}","event":"{event}","data":{{"run_id":"r{run}-{u}","thread_id":"{ch}","agent_id":"bench-agent","seq":{run_seq}{extra},"s":{seq},"t":{t},"u":"{u}"}}}}"#
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_with_required_fields() {
        let f = Feed::new("user:u1", "u1");
        for seq in 0..50 {
            let mut out = Vec::new();
            write_event(&mut out, &f, seq, 123, EventKind::Agent);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["channel"], "user:u1");
            let d = &v["data"];
            for k in ["run_id", "thread_id", "agent_id"] {
                assert!(d[k].is_string(), "{k} in {v}");
            }
            assert_eq!(d["seq"].as_u64(), Some(seq % 50 + 1));
            assert_eq!((d["s"].as_u64(), d["t"].as_u64(), d["u"].as_str()), (Some(seq), Some(123), Some("u1")));
            match v["event"].as_str().unwrap() {
                "tool_executing" | "tool_completed" => assert!(d["call_id"].is_string() && d["tool"].is_string()),
                "agent_text_delta" => assert!(d["delta"].is_string()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        write_event(&mut out, &Feed::new("room:bench", "-"), 7, 9, EventKind::Publication(16));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "publication");
        assert_eq!(v["data"]["text"].as_str().unwrap().len(), 16);
    }
}
