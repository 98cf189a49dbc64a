//! Fan-out and history through Redis (the `Broker` half of the engine).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chorus_core::broker::{Broker, BrokerError, Control, Health, HistoryPage, HistoryQuery, NodeSink, Retention};
use chorus_core::publication::{Draft, Position, Publication, new_epoch};
use chorus_core::NodeId;
use chorus_protocol::ChannelName;
use fred::prelude::*;

use crate::RedisBroker;
use crate::codec;
use crate::engine::{Inner, Mode, arg, int_arg, ms};

impl Inner {
    fn stream_args(&self, retention: Retention) -> (Value, Value, Value, Value) {
        let ttl = ms(retention.ttl).max(1);
        let meta_ttl = i64::try_from(self.cfg.meta_ttl.as_secs()).unwrap_or(i64::MAX).max(ttl / 1000 + 1);
        (int_arg(ttl), int_arg(self.clock.now_ms()), arg(new_epoch().to_string()), int_arg(meta_ttl))
    }

    pub async fn redis_publish(&self, channel: &ChannelName, draft: &Draft, retention: Retention) -> Result<Arc<Publication>, BrokerError> {
        let now = self.clock.now_ms();
        let body = codec::encode_body(now, draft);
        let (ttl, _, candidate, meta_ttl) = self.stream_args(retention);
        let args = vec![
            arg(self.keys.events(channel)),
            Value::Bytes(body.clone()),
            int_arg(retention.max_events),
            ttl,
            int_arg(now),
            candidate,
            meta_ttl,
        ];
        let started = Instant::now();
        let v = self.eval(&self.scripts.publish, vec![self.keys.meta(channel), self.keys.stream(channel)], args).await?;
        self.metrics.publish_latency.observe(started.elapsed().as_secs_f64());
        let mut parts = v.into_array().into_iter();
        let offset = parts.next().and_then(|v| v.as_u64());
        let epoch = parts.next().and_then(|v| v.as_string());
        let (Some(offset), Some(epoch)) = (offset, epoch) else {
            return Err(BrokerError::Unavailable("malformed publish reply from Redis".into()));
        };
        let position = Position { offset, epoch: Arc::from(epoch) };
        Ok(Arc::new(Publication::new(channel.clone(), position, now, draft.clone())))
    }

    pub async fn redis_history(&self, channel: &ChannelName, query: &HistoryQuery, retention: Retention) -> Result<HistoryPage, BrokerError> {
        let (mode, offset, epoch, limit) = match query {
            HistoryQuery::Position => ("P", 0, String::new(), 1),
            HistoryQuery::Since { position, limit } => ("S", position.offset, position.epoch.to_string(), (*limit).max(1)),
            HistoryQuery::Latest { limit } => ("L", 0, String::new(), (*limit).max(1)),
        };
        let (ttl, now, candidate, meta_ttl) = self.stream_args(retention);
        let args = vec![arg(mode), int_arg(offset), arg(epoch), int_arg(limit), ttl, now, candidate, meta_ttl];
        let v = self.eval(&self.scripts.history, vec![self.keys.meta(channel), self.keys.stream(channel)], args).await?;
        let malformed = || BrokerError::Unavailable("malformed history reply from Redis".into());
        let mut parts = v.into_array().into_iter();
        let ok = parts.next().and_then(|v| v.as_i64()).ok_or_else(malformed)?;
        let epoch: Arc<str> = Arc::from(parts.next().and_then(|v| v.as_string()).ok_or_else(malformed)?);
        let top = parts.next().and_then(|v| v.as_u64()).ok_or_else(malformed)?;
        let current = Position { offset: top, epoch: epoch.clone() };
        if ok != 1 {
            return Err(BrokerError::Unrecoverable { current });
        }
        let entries = match parts.next() {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let mut publications = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut e = entry.into_array().into_iter();
            let id = e.next().and_then(|v| v.as_string()).ok_or_else(malformed)?;
            let offset = codec::offset_of_id(&id).ok_or_else(malformed)?;
            // Fields: ["p", body].
            let body = e.next().map(Value::into_array).and_then(|f| f.into_iter().nth(1)).and_then(Value::into_bytes).ok_or_else(malformed)?;
            match codec::decode_body(channel.clone(), Position { offset, epoch: epoch.clone() }, body) {
                Ok(p) => publications.push(Arc::new(p)),
                Err(e) => return Err(BrokerError::Unavailable(e.to_string())),
            }
        }
        if matches!(query, HistoryQuery::Latest { .. }) {
            publications.reverse();
        }
        if let HistoryQuery::Latest { limit: 0 } = query {
            publications.clear();
        }
        Ok(HistoryPage { current, publications })
    }

    pub async fn redis_control(&self, target: Option<&NodeId>, control: &Control) -> Result<(), BrokerError> {
        if let Control::Maintenance(mode) = control {
            // Stored, not only broadcast: a node that starts later reads it.
            let text = codec::encode_maintenance(mode).to_string();
            self.redis().set::<(), _, _>(self.keys.maintenance(), text, None, None, false).await.map_err(|e| self.fail("maintenance", &e))?;
        }
        let body = codec::encode_control(target, control);
        let args = vec![arg(self.keys.control()), arg(body), int_arg(self.cfg.control_max_entries)];
        self.eval(&self.scripts.control, vec![self.keys.control()], args).await?;
        Ok(())
    }

    pub fn deliver_control_locally(&self, target: Option<&NodeId>, control: Control) {
        if target.is_none_or(|t| *t == self.node)
            && let Some(sink) = self.sink()
        {
            sink.control(control);
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, channel: &ChannelName, draft: Draft, retention: Retention) -> Result<Arc<Publication>, BrokerError> {
        let i = &self.0;
        if i.is_up() {
            match i.redis_publish(channel, &draft, retention).await {
                Ok(p) => return Ok(p),
                // Script errors (not reachability) are answered as such.
                Err(e) if i.is_up() => return Err(e),
                Err(_) => {}
            }
        }
        // Degraded: local subscribers only, on the local stream's own epoch,
        // so nobody mistakes these offsets for Redis's.
        i.metrics.local_publishes.inc();
        i.local.publish(channel, draft, retention).await
    }

    async fn history(&self, channel: &ChannelName, query: HistoryQuery, retention: Retention) -> Result<HistoryPage, BrokerError> {
        let i = &self.0;
        if i.is_up() {
            match i.redis_history(channel, &query, retention).await {
                Ok(page) => return Ok(page),
                Err(e @ BrokerError::Unrecoverable { .. }) => return Err(e),
                Err(e) if i.is_up() => return Err(e),
                Err(_) => {}
            }
        }
        i.local.history(channel, query, retention).await
    }

    async fn attach(&self, node: &NodeId, sink: Arc<dyn NodeSink>) -> Result<(), BrokerError> {
        let i = &self.0;
        if *node != i.node {
            return Err(BrokerError::Unavailable(format!("this engine serves node {}, not {node}", i.node)));
        }
        *i.sink.write() = Some(sink.clone());
        i.local.attach(node, sink).await?;
        self.start().await;
        Ok(())
    }

    async fn detach(&self, node: &NodeId) {
        self.0.local.detach(node).await;
        self.stop().await;
    }

    async fn listen(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        let i = &self.0;
        i.local.listen(node, channel).await?;
        // The mode is read under the set's lock: either this sees Redis back,
        // or the recovery's snapshot of the set includes this channel.
        let up = {
            let mut listened = i.listened.lock();
            listened.insert(channel.clone());
            i.is_up()
        };
        // In effect on return: the hub reads history only afterwards.
        let subscribed = async {
            i.subscriber().subscribe(i.keys.events(channel)).await?;
            i.pubsub_barrier().await
        };
        if up
            && let Err(e) = subscribed.await
        {
            // Degraded now; the recovery subscribes every listened channel.
            let _ = i.fail("subscribe", &e);
        }
        Ok(())
    }

    async fn unlisten(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        let i = &self.0;
        i.listened.lock().remove(channel);
        i.local.unlisten(node, channel).await?;
        let unsubscribed = async {
            i.subscriber().unsubscribe(i.keys.events(channel)).await?;
            i.pubsub_barrier().await
        };
        if i.is_up()
            && let Err(e) = unsubscribed.await
        {
            let _ = i.fail("unsubscribe", &e);
        }
        Ok(())
    }

    async fn control(&self, target: Option<&NodeId>, control: Control) -> Result<(), BrokerError> {
        let i = &self.0;
        if i.is_up() {
            match i.redis_control(target, &control).await {
                Ok(()) => return Ok(()),
                Err(e) if i.is_up() => return Err(e),
                Err(_) => {}
            }
        }
        // This node still applies it; others cannot hear of it.
        i.deliver_control_locally(target, control);
        Err(BrokerError::Unavailable("Redis is unreachable: only this node applied the change".into()))
    }

    async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError> {
        let i = &self.0;
        if !i.is_up() {
            return Err(BrokerError::Unavailable("Redis is unreachable: which nodes are alive is unknown".into()));
        }
        let args = vec![int_arg(ms(i.cfg.node_ttl))];
        let v = i.eval(&i.scripts.live_nodes, vec![i.keys.nodes()], args).await?;
        Ok(v.into_array().into_iter().filter_map(|v| v.as_string()).map(NodeId::new).collect())
    }

    async fn sweep(&self) {
        self.0.local.sweep().await;
    }

    fn health(&self) -> Health {
        let i = &self.0;
        match &*i.mode.read() {
            Mode::Up => match &*i.pubsub_trouble.lock() {
                None => Health::Up { detail: format!("redis, {} channels listened on this node", i.listened.lock().len()) },
                Some(reason) => Health::Degraded { detail: format!("redis pub/sub not delivering ({reason}); resubscribing") },
            },
            Mode::Degraded { reason, since_ms } => Health::Degraded {
                detail: format!(
                    "redis unreachable for {} ms ({reason}); local delivery only, presence unavailable, per-user limit per node",
                    i.clock.now_ms().saturating_sub(*since_ms)
                ),
            },
        }
    }

    fn streams(&self) -> usize {
        self.0.listened.lock().len()
    }
}
