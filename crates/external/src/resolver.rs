//! Name resolution for webhook deliveries that refuses non-public addresses.
//!
//! The URL was checked when the agent was saved, but a name can resolve to
//! anything later (DNS rebinding). Every connection the webhook client makes
//! resolves through here, so the addresses it actually connects to are the
//! ones checked. A name with any refused address is refused as a whole.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address::AddressPolicy;

/// Resolves with the system resolver, then applies the policy.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

/// A name refused by the policy or not resolvable.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{name} resolves to a non-public address ({ip}); allow its network in external_agents.allowed_networks to use it"
    )]
    NonPublic { name: String, ip: std::net::IpAddr },
    #[error("{name} resolves to no address")]
    NoAddress { name: String },
    #[error("{name} could not be resolved: {source}")]
    Lookup { name: String, source: std::io::Error },
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }

    /// The addresses of `name` (port 0), all checked.
    pub async fn lookup(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|source| ResolveError::Lookup { name: name.to_owned(), source })?
            .collect();
        if let Some(bad) = found.iter().find(|a| !self.policy.permits(a.ip())) {
            return Err(ResolveError::NonPublic { name: name.to_owned(), ip: bad.ip() });
        }
        if found.is_empty() {
            return Err(ResolveError::NoAddress { name: name.to_owned() });
        }
        Ok(found)
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_names_of_non_public_addresses_unless_allowed() {
        let strict = PolicyResolver::new(Arc::new(AddressPolicy::default()));
        match strict.lookup("localhost").await {
            Err(ResolveError::NonPublic { ip, .. }) => assert!(ip.is_loopback()),
            other => panic!("{other:?}"),
        }
        let open = PolicyResolver::new(Arc::new(AddressPolicy::new(&["127.0.0.0/8", "::1/128"]).unwrap()));
        let addrs = open.lookup("localhost").await.unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
