//! Keeping a node in step with Redis: the pump (pub/sub deliveries, probes,
//! recovery after any loss) and the keeper (heartbeat, sweeping dead nodes).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_core::broker::{Control, HistoryQuery, Retention, RegisteredConnection};
use chorus_core::UserId;
use chorus_protocol::{ChannelName, CloseCode};
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use tokio::sync::broadcast::error::RecvError;

use crate::codec;
use crate::engine::{Inner, arg, int_arg, ms};
use crate::registry::{decode_registrations, details_arg, index_member};

/// What broke a recovery: the command connection (publishes then go local)
/// or only pub/sub (publishes keep going through Redis).
enum Failure {
    Commands(String),
    PubSub(String),
}

/// Channels subscribed per SUBSCRIBE command when resubscribing.
const SUBSCRIBE_BATCH: usize = 512;
/// Scripts run at once while resyncing.
const RESYNC_CONCURRENCY: usize = 64;
/// Members written per ZADD when rewriting a node's connection index.
const INDEX_BATCH: usize = 1000;

impl Inner {
    /// Delivers one pub/sub message: an event, a control message or a probe.
    fn on_message(&self, message: fred::types::Message) {
        let name: &str = &message.channel;
        if let Some(raw) = self.keys.channel_of(name) {
            let Ok(channel) = ChannelName::parse(raw) else { return };
            let Some(bytes) = message.value.into_bytes() else { return };
            match codec::decode_message(channel, bytes) {
                Ok(p) => {
                    let lag = self.clock.now_ms().saturating_sub(p.time_ms).max(0);
                    self.metrics.pubsub_lag.observe(lag as f64 / 1000.0);
                    if let Some(sink) = self.sink() {
                        sink.publication(Arc::new(p));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropped an undecodable event from Redis"),
            }
        } else if name == self.keys.control() {
            let Some(text) = message.value.as_string() else { return };
            if let Some((id, body)) = text.split_once('\n') {
                self.apply_control(id, body);
            }
        } else if name == self.keys.probe(&self.node)
            && let Some(n) = message.value.as_u64()
        {
            let mut p = self.probes.lock();
            p.heard = p.heard.max(n);
        }
    }

    /// Applies a control message once, in stream order.
    fn apply_control(&self, id: &str, body: &str) {
        let Some(sid) = codec::stream_id(id) else { return };
        {
            let mut last = self.last_control.lock();
            if last.is_some_and(|l| sid <= l) {
                return;
            }
            *last = Some(sid);
        }
        match codec::decode_control(body) {
            Ok((target, control)) => self.deliver_control_locally(target.as_ref(), control),
            Err(e) => tracing::warn!(error = %e, "dropped an undecodable control message"),
        }
    }

    /// Sends a probe through the command connection; the pump must hear it
    /// back on pub/sub, or deliveries have stopped and the node degrades.
    async fn probe(&self) {
        let stale = {
            let p = self.probes.lock();
            p.heard < p.sent && p.sent_at.is_some_and(|t| t.elapsed() > self.cfg.command_timeout * 2)
        };
        if stale {
            self.pubsub_down("pub/sub stopped delivering (probe not heard back)");
            return;
        }
        let n = {
            let mut p = self.probes.lock();
            if p.heard < p.sent {
                // One probe in flight at a time.
                return;
            }
            p.sent += 1;
            p.sent_at = Some(tokio::time::Instant::now());
            p.sent
        };
        match self.redis().publish::<i64, _, _>(self.keys.probe(&self.node), int_arg(n)).await {
            Ok(0) => self.pubsub_down("pub/sub connection is not subscribed"),
            Ok(_) => {}
            Err(e) => {
                let _ = self.fail("probe", &e);
            }
        }
    }

    /// Brings the node back in step: subscriptions, control messages missed,
    /// maintenance, this node's registrations and presence, then every
    /// listened channel checked against its stream. Returns false if Redis
    /// failed midway (the next tick tries again).
    pub async fn recover_now(&self) -> bool {
        tracing::debug!("recovering");
        self.recovering.store(true, Ordering::Release);
        self.needs_recovery.store(false, Ordering::Release);
        let done = match self.try_recover().await {
            Ok(()) => {
                self.metrics.recoveries.inc();
                true
            }
            Err(Failure::Commands(reason)) => {
                self.mark_down(&reason);
                false
            }
            Err(Failure::PubSub(reason)) => {
                self.pubsub_down(&reason);
                false
            }
        };
        self.recovering.store(false, Ordering::Release);
        self.changed();
        done
    }

    async fn try_recover(&self) -> Result<(), Failure> {
        let r = |what: &str, e: Error| Failure::Commands(format!("{what}: {e}"));
        self.redis().ping::<String>(None).await.map_err(|e| r("ping", e))?;
        let run = self.read_run_id().await.map_err(|e| r("info", e))?;
        *self.run_id.write() = run;
        self.load_scripts().await.map_err(|e| r("script load", e))?;
        self.heartbeat().await.map_err(Failure::Commands)?;
        // Commands work: from here on everything new goes through Redis, and
        // what was done before is in the snapshots taken below (a listen,
        // join or register reads the mode under the same locks).
        self.mark_up();
        if !self.pubsub.is_connected() {
            return Err(Failure::PubSub("pub/sub connection not established".into()));
        }

        // Subscriptions first: from here on nothing published is missed.
        let mut names = vec![self.keys.control(), self.keys.probe(&self.node)];
        let listened: Vec<ChannelName> = self.listened.lock().iter().cloned().collect();
        names.extend(listened.iter().map(|c| self.keys.events(c)));
        tracing::debug!(channels = names.len(), "resubscribing");
        for batch in names.chunks(SUBSCRIBE_BATCH) {
            self.subscriber().subscribe(batch.to_vec()).await.map_err(|e| Failure::PubSub(format!("subscribe: {e}")))?;
        }
        self.pubsub_barrier().await.map_err(|e| Failure::PubSub(format!("subscribe: {e}")))?;
        {
            let mut p = self.probes.lock();
            p.heard = p.sent;
            p.sent_at = None;
        }

        self.replay_controls().await.map_err(Failure::Commands)?;
        let mode: Option<String> = self.redis().get(self.keys.maintenance()).await.map_err(|e| r("maintenance", e))?;
        if let Some(text) = mode
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Ok(mode) = codec::decode_maintenance(&v)
        {
            self.deliver_control_locally(None, Control::Maintenance(mode));
        }

        self.resync_registry().await.map_err(Failure::Commands)?;
        self.resync_presence().await.map_err(Failure::Commands)?;
        *self.pubsub_trouble.lock() = None;
        self.check_positions(listened).await;
        Ok(())
    }

    /// Applies control messages published while this node could not hear them.
    async fn replay_controls(&self) -> Result<(), String> {
        let last = *self.last_control.lock();
        let Some((ms_part, seq)) = last else {
            // First start: only what comes from now on.
            let top: Value = self.redis().xrevrange(self.keys.control(), "+", "-", Some(1)).await.map_err(|e| format!("control: {e}"))?;
            let id = top.into_array().into_iter().next().and_then(|e| e.into_array().into_iter().next()).and_then(|v| v.as_string());
            let mut l = self.last_control.lock();
            if l.is_none() {
                *l = Some(id.as_deref().and_then(codec::stream_id).unwrap_or((0, 0)));
            }
            return Ok(());
        };
        let oldest = u64::try_from(self.clock.now_ms().saturating_sub(ms(self.cfg.control_replay))).unwrap_or(0);
        let start = format!("({ms_part}-{seq}");
        let entries: Value = self
            .redis()
            .xrange(self.keys.control(), start, "+", Some(self.cfg.control_max_entries as u64))
            .await
            .map_err(|e| format!("control replay: {e}"))?;
        for entry in entries.into_array() {
            let mut e = entry.into_array().into_iter();
            let (Some(id), Some(fields)) = (e.next().and_then(|v| v.as_string()), e.next()) else { continue };
            let Some(body) = fields.into_array().into_iter().nth(1).and_then(|v| v.as_string()) else { continue };
            if codec::stream_id(&id).is_some_and(|(t, _)| t >= oldest) {
                self.apply_control(&id, &body);
            } else if let Some(sid) = codec::stream_id(&id) {
                *self.last_control.lock() = Some(sid);
            }
        }
        Ok(())
    }

    /// Makes Redis hold exactly this node's connections again (it may have
    /// restarted empty, or swept this node while it was cut off), enforcing
    /// the per-user limit over them.
    async fn resync_registry(&self) -> Result<(), String> {
        let mirror: Vec<(UserId, Vec<RegisteredConnection>)> = self.mirror.registry.lock().iter().map(|(u, c)| (u.clone(), c.clone())).collect();
        let indexed: Vec<String> = self.redis().smembers(self.keys.node_users(self.node.as_str())).await.map_err(|e| format!("registry: {e}"))?;
        let mut users: BTreeSet<String> = indexed.into_iter().collect();
        let mine: HashSet<String> = mirror.iter().map(|(u, _)| u.as_str().to_owned()).collect();
        users.extend(mine.iter().cloned());
        if !mine.is_empty() {
            self.redis().sadd::<(), _, _>(self.keys.node_users(self.node.as_str()), mine.iter().cloned().collect::<Vec<_>>()).await.map_err(|e| format!("registry: {e}"))?;
        }
        let limit = self.user_limit.load(Ordering::Relaxed);
        let users: Vec<String> = users.into_iter().collect();
        for batch in users.chunks(RESYNC_CONCURRENCY) {
            let calls = batch.iter().map(|user| {
                let conns = mirror.iter().find(|(u, _)| u.as_str() == user).map(|(_, c)| c.clone()).unwrap_or_default();
                async move {
                    let mut args = vec![arg(self.node.as_str()), int_arg(limit)];
                    for c in &conns {
                        args.push(arg(c.conn.to_string()));
                        args.push(arg(details_arg(c)));
                    }
                    let keys = vec![self.keys.user_order(user), self.keys.user_details(user)];
                    let v = self.eval(&self.scripts.registry_sync, keys, args).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(decode_registrations(&UserId::new(user), v))
                }
            });
            for evicted in futures_util::future::join_all(calls).await {
                for e in evicted? {
                    self.evict(e).await;
                }
            }
        }
        if mine.is_empty() {
            self.redis().del::<(), _>(self.keys.node_users(self.node.as_str())).await.map_err(|e| format!("registry: {e}"))?;
        }
        self.resync_index().await
    }

    /// Makes this node's index for the connection list hold exactly its
    /// connections again (rewritten whole: bounded by the node's connections).
    async fn resync_index(&self) -> Result<(), String> {
        let key = self.keys.node_connections(self.node.as_str());
        let members: Vec<(f64, String)> = self.mirror.registry.lock().values().flatten().map(|c| (0.0, index_member(c))).collect();
        self.redis().del::<(), _>(&key).await.map_err(|e| format!("registry: {e}"))?;
        for batch in members.chunks(INDEX_BATCH) {
            self.redis().zadd::<(), _, _>(&key, None, None, false, false, batch.to_vec()).await.map_err(|e| format!("registry: {e}"))?;
        }
        // Opened or released meanwhile: in or out again (the mirror is the truth).
        let now: HashSet<String> = self.mirror.registry.lock().values().flatten().map(index_member).collect();
        let written: HashSet<String> = members.into_iter().map(|(_, m)| m).collect();
        let stale: Vec<String> = written.difference(&now).cloned().collect();
        let missing: Vec<(f64, String)> = now.difference(&written).map(|m| (0.0, m.clone())).collect();
        if !stale.is_empty() {
            self.redis().zrem::<(), _, _>(&key, stale).await.map_err(|e| format!("registry: {e}"))?;
        }
        if !missing.is_empty() {
            self.redis().zadd::<(), _, _>(&key, None, None, false, false, missing).await.map_err(|e| format!("registry: {e}"))?;
        }
        Ok(())
    }

    /// Closes a connection evicted by the per-user limit, wherever it is.
    async fn evict(&self, e: RegisteredConnection) {
        let control = Control::Disconnect { user: e.user.clone(), conn: e.conn, code: CloseCode::ConnectionLimit };
        if e.node == self.node {
            self.deliver_control_locally(None, control);
        } else if let Err(err) = self.redis_control(Some(&e.node), &control).await {
            tracing::warn!(error = %err, node = %e.node, "could not reach the node holding an evicted connection");
        }
    }

    /// Makes Redis hold exactly this node's presence entries again.
    async fn resync_presence(&self) -> Result<(), String> {
        let mirror: Vec<(ChannelName, Vec<(String, String)>)> = self
            .mirror
            .presence
            .lock()
            .iter()
            .map(|(c, es)| (c.clone(), es.iter().map(|e| (e.conn.to_string(), e.user.as_str().to_owned())).collect()))
            .collect();
        let indexed: Vec<String> = self.redis().smembers(self.keys.node_channels(self.node.as_str())).await.map_err(|e| format!("presence: {e}"))?;
        let mut channels: BTreeSet<String> = indexed.into_iter().collect();
        channels.extend(mirror.iter().map(|(c, _)| c.as_str().to_owned()));
        if !mirror.is_empty() {
            let names: Vec<String> = mirror.iter().map(|(c, _)| c.as_str().to_owned()).collect();
            self.redis().sadd::<(), _, _>(self.keys.node_channels(self.node.as_str()), names).await.map_err(|e| format!("presence: {e}"))?;
        } else {
            self.redis().del::<(), _>(self.keys.node_channels(self.node.as_str())).await.map_err(|e| format!("presence: {e}"))?;
        }
        let node = self.node.as_str().to_owned();
        let channels: Vec<ChannelName> = channels.iter().filter_map(|c| ChannelName::parse(c).ok()).collect();
        for batch in channels.chunks(RESYNC_CONCURRENCY) {
            let calls = batch.iter().map(|channel| {
                let entries = mirror.iter().find(|(c, _)| c == channel).map(|(_, e)| e.clone()).unwrap_or_default();
                self.sync_presence(channel.clone(), node.clone(), entries)
            });
            for r in futures_util::future::join_all(calls).await {
                r?;
            }
        }
        Ok(())
    }

    /// Sets one node's entries in one channel; announces users left with none.
    async fn sync_presence(&self, channel: ChannelName, node: String, entries: Vec<(String, String)>) -> Result<(), String> {
        let mut args = vec![arg(node)];
        for (conn, user) in entries {
            args.push(arg(conn));
            args.push(arg(user));
        }
        let keys = vec![self.keys.presence_conns(&channel), self.keys.presence_users(&channel)];
        let gone = self.eval(&self.scripts.presence_sync, keys, args).await.map_err(|e| e.to_string())?;
        for user in gone.into_array().into_iter().filter_map(|v| v.as_string()) {
            // This node checks and announces `presence_left` on the channel.
            self.deliver_control_locally(None, Control::PresenceExpired { channel: channel.clone(), user: UserId::new(user) });
        }
        Ok(())
    }

    /// Hands each listened channel's newest event to the hub: a subscription
    /// behind it (an event lost while pub/sub was away) catches up from
    /// history, one on another epoch gets `recovery_failed`.
    async fn check_positions(&self, channels: Vec<ChannelName>) {
        let any = Retention { max_events: 1, ttl: Duration::from_secs(3600) };
        for batch in channels.chunks(RESYNC_CONCURRENCY) {
            let calls = batch.iter().map(|c| self.redis_history_top(c, any));
            for top in futures_util::future::join_all(calls).await.into_iter().flatten() {
                if let Some(sink) = self.sink() {
                    sink.publication(top);
                }
            }
        }
    }

    async fn redis_history_top(&self, channel: &ChannelName, retention: Retention) -> Option<Arc<chorus_core::publication::Publication>> {
        // A read only: the stream's retention is what its publishes set.
        let page = self.redis_history(channel, &HistoryQuery::Latest { limit: 1 }, retention).await.ok()?;
        page.publications.into_iter().next_back()
    }

    /// Renews this node's heartbeat; returns nodes whose heartbeat stopped.
    async fn heartbeat(&self) -> Result<Vec<String>, String> {
        let args = vec![arg(self.node.as_str()), int_arg(ms(self.cfg.node_ttl))];
        let dead = self.eval(&self.scripts.heartbeat, vec![self.keys.nodes()], args).await.map_err(|e| e.to_string())?;
        Ok(dead.into_array().into_iter().filter_map(|v| v.as_string()).filter(|n| n != self.node.as_str()).collect())
    }

    /// Removes a dead node's presence entries (announcing who left) and
    /// registrations. One live node claims the work.
    async fn sweep_node(&self, dead: &str) -> Result<(), String> {
        let claim: Option<String> = self
            .redis()
            .set(self.keys.sweep_claim(dead), self.node.as_str(), Some(Expiration::PX(ms(self.cfg.node_ttl))), Some(SetOptions::NX), false)
            .await
            .map_err(|e| format!("sweep: {e}"))?;
        if claim.is_none() {
            return Ok(());
        }
        tracing::info!(node = dead, "sweeping the entries of a node whose heartbeat stopped");
        let channels: Vec<String> = self.redis().smembers(self.keys.node_channels(dead)).await.map_err(|e| format!("sweep: {e}"))?;
        for c in channels.iter().filter_map(|c| ChannelName::parse(c).ok()) {
            self.sync_presence(c, dead.to_owned(), Vec::new()).await?;
        }
        let users: Vec<String> = self.redis().smembers(self.keys.node_users(dead)).await.map_err(|e| format!("sweep: {e}"))?;
        for user in users {
            let keys = vec![self.keys.user_order(&user), self.keys.user_details(&user)];
            self.eval(&self.scripts.registry_sync, keys, vec![arg(dead), int_arg(i64::MAX)]).await.map_err(|e| e.to_string())?;
        }
        self.redis()
            .del::<(), _>(vec![self.keys.node_channels(dead), self.keys.node_users(dead), self.keys.node_connections(dead)])
            .await
            .map_err(|e| format!("sweep: {e}"))?;
        self.redis().zrem::<(), _, _>(self.keys.nodes(), dead).await.map_err(|e| format!("sweep: {e}"))?;
        Ok(())
    }

    /// The pump: one task, so deliveries, control messages and recovery
    /// happen in one order.
    pub async fn pump(self: Arc<Self>) {
        let Some(receivers) = self.receivers.lock().take() else { return };
        let (mut messages, mut pubsub_reconnects, mut command_reconnects) =
            (receivers.messages, receivers.pubsub_reconnects, receivers.command_reconnects);
        // The first connections announce themselves too; the first sync
        // covered them (a later loss shows in the probes).
        while pubsub_reconnects.try_recv().is_ok() {}
        while command_reconnects.try_recv().is_ok() {}
        let mut tick = tokio::time::interval(self.cfg.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                m = messages.recv() => match m {
                    Ok(m) => self.on_message(m),
                    Err(RecvError::Lagged(n)) => {
                        self.metrics.pubsub_lost.inc_by(n);
                        tracing::warn!(lost = n, "pub/sub buffer overflowed; resyncing every channel");
                        self.request_recovery();
                    }
                    Err(RecvError::Closed) => return,
                },
                r = pubsub_reconnects.recv() => {
                    if !matches!(r, Err(RecvError::Closed)) {
                        // Subscriptions died with the old connection: resubscribe,
                        // then check every channel for events missed meanwhile.
                        tracing::warn!("pub/sub connection re-established; resyncing");
                        self.request_recovery();
                    }
                }
                r = command_reconnects.recv() => {
                    if !matches!(r, Err(RecvError::Closed)) {
                        self.request_recovery();
                    }
                }
                _ = tick.tick() => {
                    if self.needs_recovery.load(Ordering::Acquire) {
                        self.recover_now().await;
                    } else {
                        self.probe().await;
                    }
                }
            }
        }
    }

    /// The keeper: heartbeat, restart detection, dead-node sweeps.
    pub async fn keeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.is_up() {
                continue;
            }
            // Compared with the run id known after the answer: a recovery
            // that ran meanwhile has already taken in a restart.
            match self.read_run_id().await {
                Ok(run) if run != *self.run_id.read() => {
                    tracing::warn!("Redis restarted (new run id); resyncing");
                    self.mark_down("Redis restarted");
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = self.fail("info", &e);
                    continue;
                }
            }
            match self.heartbeat().await {
                Ok(dead) => {
                    for node in dead {
                        if let Err(e) = self.sweep_node(&node).await {
                            tracing::warn!(error = %e, node, "sweeping a dead node failed; will retry");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Leaves the cluster cleanly: this node's entries go at once.
    pub async fn leave_cluster(&self) {
        if !self.is_up() {
            return;
        }
        let node = self.node.as_str().to_owned();
        if let Err(e) = self.sweep_own(&node).await {
            tracing::warn!(error = %e, "could not remove this node's entries; they expire with its heartbeat");
        }
    }

    async fn sweep_own(&self, node: &str) -> Result<(), String> {
        self.mirror.registry.lock().clear();
        self.mirror.presence.lock().clear();
        let channels: Vec<String> = self.redis().smembers(self.keys.node_channels(node)).await.map_err(|e| e.to_string())?;
        for c in channels.iter().filter_map(|c| ChannelName::parse(c).ok()) {
            let keys = vec![self.keys.presence_conns(&c), self.keys.presence_users(&c)];
            self.eval(&self.scripts.presence_sync, keys, vec![arg(node)]).await.map_err(|e| e.to_string())?;
        }
        let users: Vec<String> = self.redis().smembers(self.keys.node_users(node)).await.map_err(|e| e.to_string())?;
        for user in users {
            let keys = vec![self.keys.user_order(&user), self.keys.user_details(&user)];
            self.eval(&self.scripts.registry_sync, keys, vec![arg(node), int_arg(i64::MAX)]).await.map_err(|e| e.to_string())?;
        }
        self.redis()
            .del::<(), _>(vec![self.keys.node_channels(node), self.keys.node_users(node), self.keys.node_connections(node)])
            .await
            .map_err(|e| e.to_string())?;
        self.redis().zrem::<(), _, _>(self.keys.nodes(), node).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
