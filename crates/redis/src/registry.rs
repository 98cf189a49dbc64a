//! The per-user connection registry through Redis: per user, a sorted set
//! of connections in registration order (a sequence Redis hands out, never
//! a node's clock) and their details; per node, an index of its
//! connections for the cluster-wide list. While Redis is away the limit
//! holds per node, from the mirror.

use async_trait::async_trait;
use chorus_core::broker::{BrokerError, ConnectionCursor, ConnectionPage, ConnectionRegistry, RegisteredConnection};
use chorus_core::{ConnId, NodeId, Transport, UserId};
use fred::prelude::*;

use crate::RedisBroker;
use crate::engine::{Inner, arg, int_arg};

fn transport_of(s: &str) -> Transport {
    if s == Transport::Sse.as_str() { Transport::Sse } else { Transport::WebSocket }
}

/// What the registry scripts store after the node: `since_ms \t transport`.
pub fn details_arg(e: &RegisteredConnection) -> String {
    format!("{}\t{}", e.since_ms, e.transport.as_str())
}

/// Registrations from a script's flat `conn, node \t since \t transport` reply.
pub fn decode_registrations(user: &UserId, v: Value) -> Vec<RegisteredConnection> {
    let flat = v.into_array();
    flat.chunks(2)
        .filter_map(|pair| {
            let conn = ConnId::parse(&pair.first()?.as_string()?)?;
            let details = pair.get(1)?.as_string()?;
            let mut parts = details.split('\t');
            let node = parts.next()?;
            let since_ms = parts.next()?.parse().ok()?;
            let transport = transport_of(parts.next().unwrap_or_default());
            Some(RegisteredConnection { conn, user: user.clone(), node: NodeId::new(node), since_ms, transport })
        })
        .collect()
}

/// A connection's member in its node's index; byte order is list order
/// (the opening time padded, then the id, whose hex text sorts as it does).
pub fn index_member(e: &RegisteredConnection) -> String {
    format!("{:020}\t{}\t{}\t{}", e.since_ms.max(0), e.conn, e.transport.as_str(), e.user)
}

fn decode_member(node: &NodeId, member: &str) -> Option<RegisteredConnection> {
    let mut parts = member.splitn(4, '\t');
    let since_ms = parts.next()?.parse().ok()?;
    let conn = ConnId::parse(parts.next()?)?;
    let transport = transport_of(parts.next()?);
    let user = UserId::new(parts.next()?);
    Some(RegisteredConnection { conn, user, node: node.clone(), since_ms, transport })
}

/// The exclusive lower bound of a page in every node's index.
fn start_after(after: Option<&ConnectionCursor>) -> String {
    match after {
        // 0x7f sorts after the tab that follows the id in every member with that prefix.
        Some(c) => format!("({:020}\t{}\u{7f}", c.since_ms.max(0), c.conn),
        None => "-".to_owned(),
    }
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

    fn mirrored(&self, user: &UserId, conn: ConnId) -> bool {
        self.mirror.registry.lock().get(user).is_some_and(|l| l.iter().any(|c| c.conn == conn))
    }

    /// Keeps this node's index in step after a registration: the new entry
    /// in (unless it was released meanwhile), the evicted ones of this node out.
    async fn index_registration(&self, entry: &RegisteredConnection, evicted_here: &[RegisteredConnection]) -> Result<(), BrokerError> {
        let key = self.keys.node_connections(self.node.as_str());
        self.redis().zadd::<(), _, _>(&key, None, None, false, false, (0.0, index_member(entry))).await.map_err(|e| self.fail("registry", &e))?;
        let mut gone: Vec<String> = evicted_here.iter().map(index_member).collect();
        if !self.mirrored(&entry.user, entry.conn) {
            gone.push(index_member(entry));
        }
        if !gone.is_empty() {
            self.redis().zrem::<(), _, _>(&key, gone).await.map_err(|e| self.fail("registry", &e))?;
        }
        Ok(())
    }

    /// Reads one node's index: its size and up to `count` entries after `start`.
    async fn index_page(&self, node: NodeId, start: &str, count: usize) -> Result<(u64, Vec<RegisteredConnection>), BrokerError> {
        let keys = vec![self.keys.node_connections(node.as_str())];
        let v = self.eval(&self.scripts.registry_page, keys, vec![arg(start), int_arg(count)]).await?;
        let mut parts = v.into_array().into_iter();
        let size = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let entries = parts.filter_map(|m| m.as_string()).filter_map(|m| decode_member(&node, &m)).collect();
        Ok((size, entries))
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
                let args = vec![arg(entry.conn.to_string()), arg(i.node.as_str()), arg(details_arg(&entry)), int_arg(limit.max(1))];
                let evicted = decode_registrations(&user, i.eval(&i.scripts.registry_register, keys, args).await?);
                let here: Vec<RegisteredConnection> = evicted.iter().filter(|e| e.node == i.node).cloned().collect();
                i.forget_locally(&user, &here);
                i.index_registration(&entry, &here).await?;
                Ok(evicted)
            }
            .await;
            match result {
                Ok(evicted) => return Ok(evicted),
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
        let (removed, last_here) = {
            let mut map = i.mirror.registry.lock();
            match map.get_mut(user) {
                Some(list) => {
                    let removed = list.iter().position(|c| c.conn == conn).map(|at| list.remove(at));
                    let empty = list.is_empty();
                    if empty {
                        map.remove(user);
                    }
                    (removed, empty)
                }
                None => (None, true),
            }
        };
        if !i.is_up() {
            // The resync after the loss removes it from Redis.
            return Ok(());
        }
        let keys = vec![i.keys.user_order(user.as_str()), i.keys.user_details(user.as_str())];
        i.eval(&i.scripts.registry_unregister, keys, vec![arg(conn.to_string())]).await?;
        if let Some(entry) = removed {
            i.redis().zrem::<(), _, _>(i.keys.node_connections(i.node.as_str()), index_member(&entry)).await.map_err(|e| i.fail("registry", &e))?;
        }
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

    /// Merges the first `limit + 1` entries after `after` of every node that
    /// heartbeats (a dead one's until it is swept, as its counts): at most
    /// nodes × (limit + 1) entries are read.
    async fn page(&self, after: Option<&ConnectionCursor>, limit: usize) -> Result<ConnectionPage, BrokerError> {
        let i = &self.0;
        if !i.is_up() {
            return Err(BrokerError::Unavailable("the cluster-wide connection list is unavailable while Redis is unreachable".into()));
        }
        let limit = limit.max(1);
        let mut nodes: Vec<String> = i.redis().zrange(i.keys.nodes(), 0, -1, None, false, None, false).await.map_err(|e| i.fail("registry", &e))?;
        if !nodes.iter().any(|n| n == i.node.as_str()) {
            nodes.push(i.node.as_str().to_owned());
        }
        let start = start_after(after);
        let reads = nodes.into_iter().map(|n| i.index_page(NodeId::new(n), &start, limit + 1));
        let mut total = 0_u64;
        let mut entries = Vec::new();
        for r in futures_util::future::join_all(reads).await {
            let (size, page) = r?;
            total = total.saturating_add(size);
            entries.extend(page);
        }
        let mut page = ConnectionPage::of(entries, after, limit);
        page.total = total;
        Ok(page)
    }

    fn users(&self) -> usize {
        self.0.mirror.registry.lock().len()
    }
}
