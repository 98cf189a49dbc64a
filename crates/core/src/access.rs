//! Who may subscribe and publish where, by namespace.

use async_trait::async_trait;
use chorus_protocol::ChannelName;
use chorus_protocol::channel::pattern_matches;

use crate::config::{NamespaceConfig, Namespaces, PublishRule, SubscribeRule};
use crate::identity::Identity;
use crate::ids::UserId;

/// Answers "is this user a member of this channel", for namespaces whose
/// rule is [`SubscribeRule::Members`]. Implemented over the store.
#[async_trait]
pub trait MembershipCheck: Send + Sync + 'static {
    async fn is_member(&self, user: &UserId, channel: &ChannelName) -> Result<bool, String>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("unknown namespace `{0}`")]
    UnknownNamespace(String),
    #[error("{0}")]
    Denied(String),
    #[error("membership could not be checked: {0}")]
    Unavailable(String),
}

/// Namespace rules plus the membership seam.
#[derive(Clone)]
pub struct AccessPolicy {
    namespaces: Namespaces,
    membership: Option<std::sync::Arc<dyn MembershipCheck>>,
}

impl AccessPolicy {
    pub fn new(namespaces: Namespaces, membership: Option<std::sync::Arc<dyn MembershipCheck>>) -> Self {
        Self { namespaces, membership }
    }

    pub fn namespace(&self, channel: &ChannelName) -> Result<&NamespaceConfig, AccessError> {
        self.namespaces
            .get(channel.namespace())
            .ok_or_else(|| AccessError::UnknownNamespace(channel.namespace().to_owned()))
    }

    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    pub async fn check_subscribe(&self, who: &Identity, channel: &ChannelName) -> Result<(), AccessError> {
        let ns = self.namespace(channel)?;
        match ns.subscribe {
            SubscribeRule::Owner => {
                if channel.id() == who.user_id.as_str() {
                    Ok(())
                } else {
                    Err(AccessError::Denied(format!("`{channel}` belongs to another user")))
                }
            }
            SubscribeRule::Grants => {
                if who.grants.iter().any(|g| pattern_matches(g, channel)) {
                    Ok(())
                } else {
                    Err(AccessError::Denied(format!("token does not grant `{channel}`")))
                }
            }
            SubscribeRule::Members => {
                let check = self
                    .membership
                    .as_ref()
                    .ok_or_else(|| AccessError::Unavailable("no membership source is configured".into()))?;
                match check.is_member(&who.user_id, channel).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(AccessError::Denied(format!("not a member of `{channel}`"))),
                    Err(e) => Err(AccessError::Unavailable(e)),
                }
            }
            SubscribeRule::Authenticated => Ok(()),
        }
    }

    pub async fn check_publish(&self, who: &Identity, channel: &ChannelName) -> Result<(), AccessError> {
        match self.namespace(channel)?.publish {
            PublishRule::Server => {
                Err(AccessError::Denied(format!("clients cannot publish to namespace `{}`", channel.namespace())))
            }
            PublishRule::Subscribers => self.check_subscribe(who, channel).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Members(Vec<(&'static str, &'static str)>);

    #[async_trait]
    impl MembershipCheck for Members {
        async fn is_member(&self, user: &UserId, channel: &ChannelName) -> Result<bool, String> {
            Ok(self.0.iter().any(|(u, c)| *u == user.as_str() && *c == channel.as_str()))
        }
    }

    fn who(user: &str, grants: &[&str]) -> Identity {
        Identity {
            user_id: UserId::new(user),
            expires_at_ms: None,
            leeway_ms: 0,
            grants: grants.iter().map(|s| s.to_string()).collect(),
            session_id: None,
        }
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn personal_channels_belong_to_their_user() {
        let p = AccessPolicy::new(Namespaces::default(), None);
        assert!(p.check_subscribe(&who("alice", &[]), &ch("user:alice")).await.is_ok());
        assert!(matches!(p.check_subscribe(&who("bob", &["user:*"]), &ch("user:alice")).await, Err(AccessError::Denied(_))));
    }

    #[tokio::test]
    async fn grants_and_unknown_namespaces() {
        let mut ns = Namespaces::default();
        if let Some(room) = ns.0.get_mut("room") {
            room.subscribe = SubscribeRule::Grants;
        }
        let p = AccessPolicy::new(ns, None);
        assert!(p.check_subscribe(&who("a", &["room:x*"]), &ch("room:xy")).await.is_ok());
        assert!(p.check_subscribe(&who("a", &["room:x*"]), &ch("room:y")).await.is_err());
        assert!(matches!(p.check_subscribe(&who("a", &[]), &ch("nope:1")).await, Err(AccessError::UnknownNamespace(_))));
        assert!(p.check_publish(&who("a", &["room:*"]), &ch("room:x")).await.is_err());
    }

    #[tokio::test]
    async fn membership_cannot_be_overridden_by_grants() {
        let ns = Namespaces::default();
        assert!(matches!(
            AccessPolicy::new(ns.clone(), None).check_subscribe(&who("a", &["room:*"]), &ch("room:1")).await,
            Err(AccessError::Unavailable(_))
        ));
        let p = AccessPolicy::new(ns, Some(Arc::new(Members(vec![("a", "room:1")]))));
        assert!(p.check_subscribe(&who("a", &[]), &ch("room:1")).await.is_ok());
        assert!(p.check_subscribe(&who("b", &["room:*"]), &ch("room:1")).await.is_err());
    }
}
