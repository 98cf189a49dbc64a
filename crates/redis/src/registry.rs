//! The per-user connection registry through Redis: per user, a sorted set
//! of connections in registration order (a sequence Redis hands out, never
//! a node's clock) and their details. While Redis is away the limit holds
//! per node, from the mirror.

use async_trait::async_trait;
use chorus_core::broker::{BrokerError, ConnectionRegistry, RegisteredConnection};
use chorus_core::{ConnId, NodeId, UserId};
use fred::prelude::*;

use crate::RedisBroker;
use crate::engine::{Inner, arg, int_arg};

/// Registrations from a script's flat `conn, node \t since` reply.
pub fn decode_registrations(user: &UserId, v: Value) -> Vec<RegisteredConnection> {
    let flat = v.into_array();
    flat.chunks(2)
        .filter_map(|pair| {
            let conn = ConnId::parse(&pair.first()?.as_string()?)?;
            let details = pair.get(1)?.as_string()?;
            let (node, since) = details.split_once('\t')?;
            Some(RegisteredConnection { conn, user: user.clone(), node: NodeId::new(node), since_ms: since.parse().ok()? })
        })
        .collect()
}

impl Inner {
    /// Evicts past the limit from this node's own registrations (degraded mode).
    fn evict_locally(&self, user: &UserId, limit: usize) -> Vec<RegisteredConnection> {
        let mut map = self.mirror.registry.lock();
        let Some(list) = map.get_mut(user) else { return Vec::new() };
        let excess = list.len().saturating_sub(limit.max(1));
        list.drain(..excess).collect()
    }

    fn forget_locally(&self, user: &UserId, conns: &[RegisteredConnection]) {
        let mut map = self.mirror.registry.lock();
        if let Some(list) = map.get_mut(user) {
            list.retain(|c| !conns.iter().any(|e| e.conn == c.conn));
            if list.is_empty() {
                map.remove(user);
            }
        }
    }
}

#[async_trait]
impl ConnectionRegistry for RedisBroker {
    async fn register(&self, entry: RegisteredConnection, limit: usize) -> Result<Vec<RegisteredConnection>, BrokerError> {
        let i = &self.0;
        i.user_limit.store(limit.max(1), std::sync::atomic::Ordering::Relaxed);
        let user = entry.user.clone();
        let first_here = {
            let mut map = i.mirror.registry.lock();
            let list = map.entry(user.clone()).or_default();
            list.push(entry.clone());
            (list.len() == 1, i.is_up())
        };
        let (first_here, up) = first_here;
        if up {
            let result = async {
                if first_here {
                    i.redis().sadd::<(), _, _>(i.keys.node_users(i.node.as_str()), user.as_str()).await.map_err(|e| i.fail("registry", &e))?;
                }
                let keys = vec![i.keys.user_order(user.as_str()), i.keys.user_details(user.as_str())];
                let args = vec![arg(entry.conn.to_string()), arg(i.node.as_str()), int_arg(entry.since_ms), int_arg(limit.max(1))];
                i.eval(&i.scripts.registry_register, keys, args).await
            }
            .await;
            match result {
                Ok(v) => {
                    let evicted = decode_registrations(&user, v);
                    let here: Vec<RegisteredConnection> = evicted.iter().filter(|e| e.node == i.node).cloned().collect();
                    i.forget_locally(&user, &here);
                    return Ok(evicted);
                }
                Err(e) if i.is_up() => return Err(e),
                Err(_) => {}
            }
        }
        // Degraded: the limit holds on this node; Redis learns of this
        // connection when it returns.
        Ok(i.evict_locally(&user, limit))
    }

    async fn unregister(&self, user: &UserId, conn: ConnId) -> Result<(), BrokerError> {
        let i = &self.0;
        let last_here = {
            let mut map = i.mirror.registry.lock();
            match map.get_mut(user) {
                Some(list) => {
                    list.retain(|c| c.conn != conn);
                    let empty = list.is_empty();
                    if empty {
                        map.remove(user);
                    }
                    empty
                }
                None => true,
            }
        };
        if !i.is_up() {
            // The resync after the loss removes it from Redis.
            return Ok(());
        }
        let keys = vec![i.keys.user_order(user.as_str()), i.keys.user_details(user.as_str())];
        i.eval(&i.scripts.registry_unregister, keys, vec![arg(conn.to_string())]).await?;
        if last_here {
            i.redis().srem::<(), _, _>(i.keys.node_users(i.node.as_str()), user.as_str()).await.map_err(|e| i.fail("registry", &e))?;
        }
        Ok(())
    }

    async fn connections(&self, user: &UserId) -> Result<Vec<RegisteredConnection>, BrokerError> {
        let i = &self.0;
        if !i.is_up() {
            return Err(BrokerError::Unavailable("the cluster-wide connection list is unavailable while Redis is unreachable".into()));
        }
        let keys = vec![i.keys.user_order(user.as_str()), i.keys.user_details(user.as_str())];
        let v = i.eval(&i.scripts.registry_list, keys, Vec::new()).await?;
        Ok(decode_registrations(user, v))
    }

    fn users(&self) -> usize {
        self.0.mirror.registry.lock().len()
    }
}
