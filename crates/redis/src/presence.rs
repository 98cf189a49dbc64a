//! Presence through Redis: per channel, a hash of connections (user and
//! node) and a hash of per-user counts. A node's entries outlive it only
//! until another node sees its heartbeat stop (see `sync.rs`).

use async_trait::async_trait;
use chorus_core::broker::{BrokerError, PresenceEntry, PresenceStore, PresentUser};
use chorus_core::{ConnId, UserId};
use chorus_protocol::ChannelName;
use fred::prelude::*;

use crate::RedisBroker;
use crate::engine::arg;

fn unavailable() -> BrokerError {
    BrokerError::Unavailable("presence is unavailable while Redis is unreachable".into())
}

#[async_trait]
impl PresenceStore for RedisBroker {
    async fn join(&self, channel: &ChannelName, entry: PresenceEntry) -> Result<bool, BrokerError> {
        let i = &self.0;
        let first_here = {
            let mut map = i.mirror.presence.lock();
            let list = map.entry(channel.clone()).or_default();
            let first = list.is_empty();
            if !list.iter().any(|e| e.conn == entry.conn) {
                list.push(entry.clone());
            }
            (first, i.is_up())
        };
        let (first_here, up) = first_here;
        if !up {
            return Err(unavailable());
        }
        // Indexed first, so a sweep of this node after a crash finds the entry.
        if first_here {
            i.redis().sadd::<(), _, _>(i.keys.node_channels(i.node.as_str()), channel.as_str()).await.map_err(|e| i.fail("presence", &e))?;
        }
        let keys = vec![i.keys.presence_conns(channel), i.keys.presence_users(channel)];
        let v = i.eval(&i.scripts.presence_join, keys, vec![arg(entry.conn.to_string()), arg(entry.user.as_str()), arg(i.node.as_str())]).await?;
        Ok(v.as_i64() == Some(1))
    }

    async fn leave(&self, channel: &ChannelName, conn: ConnId, user: &UserId) -> Result<bool, BrokerError> {
        let i = &self.0;
        let last_here = {
            let mut map = i.mirror.presence.lock();
            match map.get_mut(channel) {
                Some(list) => {
                    list.retain(|e| e.conn != conn);
                    let empty = list.is_empty();
                    if empty {
                        map.remove(channel);
                    }
                    empty
                }
                None => false,
            }
        };
        if !i.is_up() {
            return Err(unavailable());
        }
        let keys = vec![i.keys.presence_conns(channel), i.keys.presence_users(channel)];
        let v = i.eval(&i.scripts.presence_leave, keys, vec![arg(conn.to_string()), arg(user.as_str())]).await?;
        if last_here {
            i.redis().srem::<(), _, _>(i.keys.node_channels(i.node.as_str()), channel.as_str()).await.map_err(|e| i.fail("presence", &e))?;
        }
        Ok(v.as_i64() == Some(1))
    }

    async fn list(&self, channel: &ChannelName) -> Result<Vec<PresentUser>, BrokerError> {
        let i = &self.0;
        if !i.is_up() {
            return Err(unavailable());
        }
        let v: Value = i.redis().hgetall(i.keys.presence_users(channel)).await.map_err(|e| i.fail("presence", &e))?;
        let flat = v.into_array();
        let mut users: Vec<PresentUser> = flat
            .chunks(2)
            .filter_map(|pair| {
                let user = pair.first()?.as_string()?;
                let n = pair.get(1)?.as_i64()?;
                (n > 0).then(|| PresentUser { user: UserId::new(user), connections: u32::try_from(n).unwrap_or(u32::MAX) })
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(users)
    }

    async fn is_present(&self, channel: &ChannelName, user: &UserId) -> Result<bool, BrokerError> {
        let i = &self.0;
        if !i.is_up() {
            return Err(unavailable());
        }
        i.redis().hexists(i.keys.presence_users(channel), user.as_str()).await.map_err(|e| i.fail("presence", &e))
    }

    fn channels(&self) -> usize {
        self.0.mirror.presence.lock().len()
    }
}
