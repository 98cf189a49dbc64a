//! What follows a `subscribe` reply: the replay of missed events (or
//! `recovery_failed`), then the catch-up that makes the subscription live
//! once history holds everything it saw go by. Also the resync after a gap
//! in live delivery. Each runs in a task of its own, beside the reader.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::push::ReasonData;
use chorus_protocol::{CloseCode, ControlPush, encode_control, timestamp};
use tracing::Instrument;

use super::Hub;
use crate::broker::{BrokerError, HistoryQuery, Retention};
use crate::outbound::Outgoing;
use crate::publication::{Position, Publication};
use crate::subscription::Subscription;
use crate::supervise::catch_panic;

/// The work left after a `subscribe` reply was sent: replay what was missed
/// (or announce that it cannot be), then catch up and go live.
pub struct FollowUp {
    sub: Arc<Subscription>,
    /// The connection's request id, for the follow-up's log lines.
    request_id: Arc<str>,
    start: SyncStart,
    retention: Retention,
}

pub(super) enum SyncStart {
    Replay { from: Position, publications: Vec<Arc<Publication>> },
    Failed { current: Position },
}

impl SyncStart {
    /// How many events the replay will push.
    pub(super) fn replay_len(&self) -> u64 {
        match self {
            SyncStart::Replay { from, publications } => publications.iter().filter(|p| p.offset > from.offset).count() as u64,
            SyncStart::Failed { .. } => 0,
        }
    }
}

impl FollowUp {
    pub(super) fn new(sub: Arc<Subscription>, request_id: Arc<str>, start: SyncStart, retention: Retention) -> Self {
        Self { sub, request_id, start, retention }
    }
}

impl Hub {
    /// Runs a subscription's follow-up in a task of its own, beside the
    /// connection's reader, so a long replay never holds up the client's
    /// frames (pongs, `refresh`, other commands).
    pub fn spawn_follow_up(&self, follow_up: FollowUp) {
        let hub = self.clone();
        let sub = follow_up.sub.clone();
        let span = tracing::info_span!(parent: None, "follow_up", request_id = %follow_up.request_id, channel = %sub.channel);
        self.spawn_sync("follow_up", &sub, span, async move { hub.run_follow_up(follow_up).await });
    }

    /// Brings a subscription that saw a gap in live delivery up to date again,
    /// from the last position it queued.
    pub(super) fn spawn_resync(&self, sub: Arc<Subscription>, at: Position, retention: Retention) {
        let hub = self.clone();
        let task_sub = sub.clone();
        let span = tracing::info_span!(parent: None, "resync", conn = %sub.conn, channel = %sub.channel);
        self.spawn_sync("resync", &sub, span, async move { hub.catch_up(&task_sub, at, retention).await });
    }

    /// Spawns work that brings a subscription up to date, in its span. A
    /// panic there closes the connection with 1011: the subscription would
    /// otherwise stay behind for good.
    fn spawn_sync<F: Future<Output = ()> + Send + 'static>(&self, task: &'static str, sub: &Arc<Subscription>, span: tracing::Span, fut: F) {
        let metrics = self.0.metrics.clone();
        let outbound = sub.outbound().clone();
        self.0.connections.spawn(
            async move {
                if catch_panic(&metrics, task, fut).await.is_none() {
                    outbound.close(CloseCode::InternalError);
                }
            }
            .instrument(span),
        );
    }

    /// Sends the replay (or `recovery_failed`), then catches up and goes live.
    /// Stops once the subscription ends; nothing of it is queued after that.
    pub async fn run_follow_up(&self, follow_up: FollowUp) {
        let FollowUp { sub, start, retention, .. } = follow_up;
        let at = match start {
            SyncStart::Replay { mut from, publications } => {
                for p in publications {
                    if p.offset <= from.offset {
                        continue;
                    }
                    let offset = p.offset;
                    if !self.push_replayed(&sub, p).await {
                        return;
                    }
                    from.offset = offset;
                }
                from
            }
            SyncStart::Failed { current } => {
                if !self.push_recovery_failed(&sub, &current).await {
                    return;
                }
                current
            }
        };
        self.catch_up(&sub, at, retention).await;
    }

    async fn push_recovery_failed(&self, sub: &Subscription, current: &Position) -> bool {
        let push = ControlPush::RecoveryFailed {
            channel: sub.channel.to_string(),
            offset: current.offset,
            epoch: current.epoch.to_string(),
            timestamp: timestamp::format_ms(self.now_ms()),
            data: ReasonData { reason: "missed events are no longer in history; refetch, then continue from this position".into() },
        };
        let item = Outgoing::RecoveryFailed { channel: sub.channel.clone(), position: current.clone(), frame: encode_control(&push) };
        matches!(sub.outbound().push_paced_while(item, || sub.is_active()).await, Ok(true))
    }

    /// Queues one event from history, paced; false once the subscription or
    /// its connection has ended.
    async fn push_replayed(&self, sub: &Subscription, p: Arc<Publication>) -> bool {
        let event = p.event;
        let queued = matches!(sub.outbound().push_paced_while(Outgoing::Event(p), || sub.is_active()).await, Ok(true));
        if queued {
            self.0.metrics.events_out.inc_by(event, 1);
        }
        queued
    }

    /// Reads history until the subscription has everything it saw go by, then
    /// flips it live.
    async fn catch_up(&self, sub: &Arc<Subscription>, mut at: Position, retention: Retention) {
        let mut failures = 0u32;
        let mut empty_rounds = 0u32;
        loop {
            if !sub.is_active() || sub.try_go_live(&at) {
                return;
            }
            let query = HistoryQuery::Since { position: at.clone(), limit: retention.max_events.max(1) };
            match self.0.backplane.broker.history(&sub.channel, query, retention).await {
                Ok(page) => {
                    failures = 0;
                    if page.publications.is_empty() {
                        // Seen something history does not have yet; never spin forever.
                        empty_rounds += 1;
                        if empty_rounds > 50 {
                            sub.outbound().close(CloseCode::InsufficientState);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    empty_rounds = 0;
                    for p in page.publications {
                        let offset = p.offset;
                        if !self.push_replayed(sub, p).await {
                            return;
                        }
                        at.offset = offset;
                    }
                }
                Err(BrokerError::Unrecoverable { current }) => {
                    self.0.metrics.recovery("failed");
                    if !self.push_recovery_failed(sub, &current).await {
                        return;
                    }
                    at = current;
                }
                Err(BrokerError::Unavailable(e)) => {
                    self.0.metrics.broker_errors.inc();
                    failures += 1;
                    if failures > 5 {
                        tracing::warn!(error = %e, channel = %sub.channel, "cannot catch up a subscription; closing its connection");
                        sub.outbound().close(CloseCode::InsufficientState);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                }
            }
        }
    }
}
