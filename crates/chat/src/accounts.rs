//! Users, passwords, login sessions, access tokens, API keys.
//!
//! - Sign-up and login with Argon2id ([`password`]); login is rate-limited
//!   per account and per client address, and an unknown user costs what a
//!   wrong password costs.
//! - A login makes a session: a short-lived HS256 access token carrying the
//!   session id (`sid`) and a refresh token stored only as a digest, rotated
//!   on every use.
//! - Every token with a `sid` is good only while its session is
//!   ([`sessions`]): not revoked, not past its maximum age, not idle.
//!   Revoking a session closes its live connections at once through the hub.
//! - Tokens of external identity providers map to local users ([`external`]).
//! - API keys for server-side callers, stored as digests.

pub mod cache;
pub mod external;
pub mod limits;
pub mod password;
pub mod secrets;
pub mod sessions;
mod tokens;
pub mod validate;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_auth::{HmacSecret, JwtVerifier, MintRequest, mint_token};
use chorus_core::UserId;
use chorus_protocol::timestamp::format_ms;
use chorus_protocol::{ChannelName, EventType, Payload};
use chorus_store::{NewApiKey, NewAuthSession, NewUser, Store, StoreError, User, UserRole};
use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use self::cache::BoundedMap;
use self::external::Providers;
use self::limits::AuthLimits;
use self::password::Passwords;
use self::sessions::{Ended, Sessions};
use crate::keys::KeyScope;
use crate::views::{ApiKeyView, PublicUserView, SessionView, UserView};
use crate::{Caller, ChatError, Deps};

/// Agent-creation limiter entries idle this long are dropped by cleanup (that rate refills within a minute).
pub(crate) const LIMITER_IDLE: Duration = Duration::from_secs(10 * 60);
/// How long a store lookup of an API key is trusted.
const API_KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// API keys remembered at once.
const API_KEY_CACHE_CAPACITY: usize = 10_000;
/// How often a key's `last_used_at` is written while it is in use.
const API_KEY_TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Batches of expired sessions deleted per cleanup pass at most.
const CLEANUP_MAX_BATCHES: usize = 20;
/// Longest `User-Agent` kept with a session.
const USER_AGENT_MAX: usize = 256;
/// Pause before a panicked background task restarts.
const BACKOFF: Duration = Duration::from_secs(1);

/// What sign-up and `chorus admin create-user` take.
#[derive(Clone)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount").field("username", &self.username).field("email", &self.email).finish_non_exhaustive()
    }
}

/// Where a request comes from: rate limits and the session list use it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The answer to a login or a refresh.
#[derive(Clone, Serialize, ToSchema)]
pub struct TokenGrant {
    /// A JWT for `Authorization: Bearer` and for realtime connections.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// When the access token expires (RFC 3339); refresh before.
    pub expires_at: String,
    /// Exchanged once at `POST /api/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// The login session both tokens belong to.
    pub session_id: String,
    pub user: UserView,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant").field("session_id", &self.session_id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// A new API key: the key itself is in this answer only.
#[derive(Clone, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    /// The key, for `X-API-Key`; it cannot be shown again.
    pub key: String,
    pub api_key: ApiKeyView,
}

impl fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyCreated").field("api_key", &self.api_key).finish_non_exhaustive()
    }
}

/// Validates an account and hashes its password on the current task's
/// blocking pool, then creates the user. For the CLI and the bootstrap
/// administrator; sign-up goes through [`Accounts::sign_up`].
pub async fn create_user(store: &dyn Store, account: NewAccount, role: UserRole) -> Result<User, ChatError> {
    let email = check_account(&account)?;
    if store.get_user_by_username(&account.username).await?.is_some() {
        return Err(username_taken());
    }
    let password = account.password;
    let hash = tokio::task::spawn_blocking(move || password::hash_now(&password))
        .await
        .map_err(|e| ChatError::Internal(format!("password hashing task failed: {e}")))??;
    insert_user(store, account.username, email, hash, role).await
}

fn check_account(account: &NewAccount) -> Result<Option<String>, ChatError> {
    validate::username(&account.username)?;
    validate::password(&account.password)?;
    account.email.as_deref().map(validate::email).transpose()
}

fn username_taken() -> ChatError {
    ChatError::Conflict("username: already taken".into())
}

async fn insert_user(store: &dyn Store, username: String, email: Option<String>, hash: String, role: UserRole) -> Result<User, ChatError> {
    let new = NewUser { username, email, password_hash: Some(hash), role, external: None };
    store.create_user(new).await.map_err(|e| match e {
        // Only the username can collide for a user without an external identity.
        StoreError::Conflict(_) => username_taken(),
        other => other.into(),
    })
}

fn bad_credentials() -> ChatError {
    ChatError::Unauthorized("invalid username or password".into())
}

fn invalid_refresh() -> ChatError {
    ChatError::Unauthorized("the refresh token is invalid, already used, or its session has ended".into())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone)]
struct KnownKey {
    id: String,
    owner: String,
    scope: KeyScope,
    checked: Instant,
    touched: Instant,
}

/// A live API key a user created: who owns it and what narrows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    /// `api_key:<id>`, for logs.
    pub key_id: String,
    pub owner: String,
    pub scope: KeyScope,
}

struct Inner {
    deps: Deps,
    /// Signs access tokens at login; `None` when only an external identity
    /// provider's keys are configured (local sign-in is then refused).
    secret: Option<HmacSecret>,
    jwt: JwtVerifier,
    passwords: Passwords,
    sessions: Sessions,
    providers: Providers,
    /// Digest → key, for keys that were live when last read.
    api_keys: BoundedMap<String, KnownKey>,
    limits: AuthLimits,
}

/// Accounts and authentication. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

impl Accounts {
    pub fn new(deps: Deps, secret: Option<HmacSecret>, jwt: JwtVerifier) -> Self {
        let sessions = Sessions::new(deps.store.clone(), deps.clock.clone(), deps.config.session_idle, deps.config.session_touch_interval);
        let providers = Providers::new(deps.store.clone());
        let inner = Inner {
            deps,
            secret,
            jwt,
            passwords: Passwords::new(),
            sessions,
            providers,
            api_keys: BoundedMap::new(API_KEY_CACHE_CAPACITY),
            limits: AuthLimits::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    fn store(&self) -> &dyn Store {
        self.inner.deps.store.as_ref()
    }

    /// The count of password verifications, for `/metrics`.
    pub fn password_checks(&self) -> &password::PasswordChecks {
        self.inner.passwords.checks()
    }

    fn now_ms(&self) -> i64 {
        self.inner.deps.now_ms()
    }

    // ------------------------------------------------------------ start

    /// Prepares password checks and creates the configured bootstrap
    /// administrator if no administrator exists. Refuses to start when that
    /// username belongs to someone else: promoting them would hand a
    /// stranger the keys.
    pub async fn bootstrap(&self) -> Result<(), ChatError> {
        self.inner.passwords.prepare().await?;
        let Some(admin) = self.inner.deps.config.bootstrap_admin.clone() else { return Ok(()) };
        let account = NewAccount { username: admin.username, password: admin.password, email: None };
        let email = check_account(&account).map_err(|e| ChatError::Invalid(format!("chat.bootstrap_admin.{e}")))?;
        if self.store().count_admins().await? > 0 {
            return Ok(());
        }
        if self.store().get_user_by_username(&account.username).await?.is_some() {
            return Err(ChatError::Conflict(format!(
                "chat.bootstrap_admin: the username `{}` belongs to an existing user who is not an administrator; \
                 choose another or use `chorus admin create-user`",
                account.username
            )));
        }
        let hash = self.inner.passwords.hash(account.password).await?;
        let user = match insert_user(self.store(), account.username, email, hash, UserRole::Admin).await {
            Ok(user) => user,
            // Another node starting at the same time created it.
            Err(ChatError::Conflict(_)) if self.store().count_admins().await? > 0 => return Ok(()),
            Err(e) => return Err(e),
        };
        tracing::info!(user = %user.id, username = %user.username, "bootstrap administrator created");
        Ok(())
    }

    /// Starts the loop that keeps sessions with live connections on this
    /// node from going idle, and closes connections whose session ended.
    pub fn spawn_background(&self, tasks: &tokio_util::task::TaskTracker, stop: tokio_util::sync::CancellationToken) {
        let accounts = self.clone();
        let metrics = self.inner.deps.hub.metrics().clone();
        chorus_core::supervise::spawn_background(tasks, stop, metrics, "session_touch", BACKOFF, move || {
            let accounts = accounts.clone();
            async move {
                let mut tick = tokio::time::interval(accounts.inner.sessions.touch_every());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    accounts.touch_connected().await;
                }
            }
        });
    }

    /// Login session ids of this node's live connections.
    fn connected_sessions(&self) -> HashSet<String> {
        let hub = &self.inner.deps.hub;
        let users: HashSet<UserId> = hub.connection_infos().into_iter().map(|c| c.user).collect();
        users.iter().flat_map(|u| hub.user_connections(u)).filter_map(|c| c.session_id()).collect()
    }

    /// Records the activity of the login sessions behind this node's live
    /// connections (each at most every `session_touch_interval`), and closes
    /// the connections whose session ended. The background loop runs it; so
    /// does [`Accounts::cleanup`].
    pub async fn touch_connected(&self) {
        for sid in self.connected_sessions() {
            match self.inner.sessions.touch_if_due(&sid).await {
                Ok(true) => {}
                Ok(false) => self.close_session_connections(&sid).await,
                Err(e) => tracing::warn!(error = %e, "touching a connected session failed"),
            }
        }
    }

    async fn close_session_connections(&self, session_id: &str) {
        if let Err(e) = self.inner.deps.hub.revoke_session(session_id).await {
            tracing::warn!(error = %e, "closing the connections of an ended session failed");
        }
    }

    /// Deletes ended sessions (past their maximum age, idle, revoked) in
    /// small batches, closes live connections whose session ended, and drops
    /// idle limiter and cache entries. Returns how many sessions were deleted.
    pub async fn cleanup(&self) -> Result<u64, ChatError> {
        // Sessions with live connections here are in use, so only their maximum age or a revocation ends them.
        self.touch_connected().await;
        let cfg = &self.inner.deps.config;
        let cutoff = self.now_ms().saturating_sub(millis(cfg.session_idle));
        let mut deleted = 0;
        for _ in 0..CLEANUP_MAX_BATCHES {
            let n = self.store().delete_expired_sessions(cutoff, cfg.cleanup_batch).await?.total();
            deleted += n;
            if n == 0 {
                break;
            }
            tokio::time::sleep(cfg.cleanup_pause).await;
        }
        self.sweep_limiters();
        self.inner.sessions.sweep();
        self.inner.api_keys.retain(|_, k| k.checked.elapsed() < API_KEY_CACHE_TTL || k.touched.elapsed() < API_KEY_TOUCH_EVERY);
        Ok(deleted)
    }

    /// Drops refilled entries of the login, sign-up and refresh limiters; returns how many remain.
    pub fn sweep_limiters(&self) -> usize {
        self.inner.limits.sweep(&self.inner.deps.config)
    }

    /// Entries held by the login, sign-up and refresh limiters.
    pub fn limiter_entries(&self) -> usize {
        self.inner.limits.entries()
    }

    // ------------------------------------------------------------ sign-up and login

    /// Creates a user with role `user`.
    pub async fn sign_up(&self, account: NewAccount, client: &ClientInfo) -> Result<UserView, ChatError> {
        let email = check_account(&account)?;
        self.inner.limits.check_signup(&self.inner.deps.config, client.ip)?;
        // Saves a hash when the answer is already known; the insert still decides races.
        if self.store().get_user_by_username(&account.username).await?.is_some() {
            return Err(username_taken());
        }
        let hash = self.inner.passwords.hash(account.password).await?;
        let user = insert_user(self.store(), account.username, email, hash, UserRole::User).await?;
        tracing::info!(user = %user.id, "user signed up");
        Ok(UserView::from(&user))
    }

    /// Checks a username and password and starts a login session. A wrong
    /// password, an unknown user and a user without a password get the same
    /// error after the same amount of work.
    pub async fn login(&self, username: &str, password: String, client: &ClientInfo) -> Result<TokenGrant, ChatError> {
        self.signer()?;
        // Lengths no account can have are refused before any work; they say nothing about who exists.
        if username.is_empty() || username.chars().count() > validate::USERNAME_MAX {
            return Err(ChatError::invalid("username", format_args!("must be 1-{} characters", validate::USERNAME_MAX)));
        }
        if password.is_empty() || password.chars().count() > validate::PASSWORD_MAX {
            return Err(ChatError::invalid("password", format_args!("must be 1-{} characters", validate::PASSWORD_MAX)));
        }
        self.inner.limits.check_login(&self.inner.deps.config, username, client.ip)?;
        let user = self.store().get_user_by_username(username).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let matched = self.inner.passwords.verify(password, hash).await?;
        match user {
            Some(user) if matched => {
                self.inner.limits.signed_in(&self.inner.deps.config, username, client.ip);
                self.start_session(user, client).await
            }
            _ => Err(bad_credentials()),
        }
    }

    async fn start_session(&self, user: User, client: &ClientInfo) -> Result<TokenGrant, ChatError> {
        let cfg = &self.inner.deps.config;
        let refresh_token = secrets::generate(secrets::REFRESH_PREFIX);
        let now = self.now_ms();
        let user_agent = client.user_agent.as_deref().map(|ua| ua.chars().filter(|c| !c.is_control()).take(USER_AGENT_MAX).collect());
        let session = self
            .store()
            .create_session(NewAuthSession {
                user_id: user.id.clone(),
                refresh_token_hash: secrets::digest(&refresh_token),
                expires_at: now.saturating_add(millis(cfg.session_max_age)),
                user_agent,
                ip: client.ip.map(|ip| ip.to_string()),
            })
            .await?;
        self.inner.sessions.remember(&session);
        self.end_surplus_sessions(&user.id).await?;
        tracing::info!(user = %user.id, session = %session.id, "login session started");
        self.grant(&user, &session.id, refresh_token)
    }

    /// Past `sessions_per_user`, the oldest sessions end.
    async fn end_surplus_sessions(&self, user_id: &str) -> Result<(), ChatError> {
        let keep = usize::try_from(self.inner.deps.config.sessions_per_user.max(1)).unwrap_or(usize::MAX);
        let sessions = self.store().list_sessions(user_id).await?;
        for old in sessions.iter().skip(keep) {
            match self.end_session(&old.id, user_id).await {
                // Deleted by a cleanup meanwhile: ended all the same.
                Ok(()) | Err(ChatError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn end_session(&self, id: &str, user_id: &str) -> Result<(), ChatError> {
        self.store().revoke_session(id, Some(user_id)).await?;
        self.inner.sessions.forget(id, user_id);
        self.close_session_connections(id).await;
        Ok(())
    }

    /// The secret access tokens are signed with, or why local sign-in is off.
    fn signer(&self) -> Result<&HmacSecret, ChatError> {
        self.inner.secret.as_ref().ok_or_else(|| {
            ChatError::Unavailable("local sign-in is disabled: no HMAC secret is configured; sign in with the identity provider".into())
        })
    }

    fn grant(&self, user: &User, session_id: &str, refresh_token: String) -> Result<TokenGrant, ChatError> {
        let ttl = self.inner.deps.config.access_token_ttl.max(Duration::from_secs(1));
        let request = MintRequest {
            user: user.id.clone(),
            ttl,
            channels: Vec::new(),
            audience: self.inner.jwt.audience().first().cloned(),
            issuer: self.inner.jwt.issuer().map(str::to_owned),
            session_id: Some(session_id.to_owned()),
        };
        // `exp` is computed the same way inside `mint_token`: whole seconds from now.
        let clock = self.inner.deps.clock.as_ref();
        let now_secs = u64::try_from(clock.now_ms() / 1000).unwrap_or(0);
        let access_token = mint_token(self.signer()?, &request, clock).map_err(|e| ChatError::Internal(format!("minting an access token failed: {e}")))?;
        let expires_ms = i64::try_from((now_secs + ttl.as_secs()) * 1000).unwrap_or(i64::MAX);
        Ok(TokenGrant {
            access_token,
            token_type: "Bearer".into(),
            expires_at: format_ms(expires_ms),
            refresh_token,
            session_id: session_id.to_owned(),
            user: UserView::from(user),
        })
    }

    /// Exchanges a refresh token for a new access token and a new refresh
    /// token; the one presented stops working.
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<TokenGrant, ChatError> {
        self.signer()?;
        self.inner.limits.check_refresh(&self.inner.deps.config, client.ip)?;
        if !refresh_token.starts_with(secrets::REFRESH_PREFIX) || refresh_token.len() > secrets::MAX_SECRET_LEN {
            return Err(invalid_refresh());
        }
        let old_hash = secrets::digest(refresh_token);
        let Some(session) = self.store().get_live_session_by_refresh_hash(&old_hash).await? else {
            return Err(self.refused_refresh(&old_hash).await);
        };
        let now = self.now_ms();
        if session.is_idle(now, self.inner.sessions.idle_ms()) {
            return Err(Ended::Idle.error());
        }
        let user = self.store().get_user(&session.user_id).await?.ok_or_else(invalid_refresh)?;
        let new_token = secrets::generate(secrets::REFRESH_PREFIX);
        let rotated = match self.store().rotate_session_refresh(&session.id, &old_hash, &secrets::digest(&new_token)).await {
            Ok(s) => s,
            // A concurrent refresh with the same token won: the token was used twice.
            Err(StoreError::NotFound) => return Err(self.refused_refresh(&old_hash).await),
            Err(e) => return Err(e.into()),
        };
        self.inner.sessions.remember(&rotated);
        self.grant(&user, &rotated.id, new_token)
    }

    /// The answer to a refresh token that does not rotate. One that was
    /// already exchanged means two parties hold it (the standard sign of a
    /// stolen refresh token): its whole session is revoked and its live
    /// connections closed, whoever presents it.
    async fn refused_refresh(&self, hash: &str) -> ChatError {
        let reused = match self.store().get_session_by_used_refresh_hash(hash).await {
            Ok(found) => found,
            Err(e) => return e.into(),
        };
        let Some(session) = reused else { return invalid_refresh() };
        if session.revoked_at.is_none() {
            tracing::warn!(user = %session.user_id, session = %session.id, "a refresh token was used twice; its session is revoked");
            if let Err(e) = self.end_session(&session.id, &session.user_id).await {
                return e;
            }
        }
        ChatError::Unauthorized(
            "this refresh token was already used, so a copy of it may be in other hands: its login session has been revoked; sign in again".into(),
        )
    }

    // ------------------------------------------------------------ sessions

    /// Ends the caller's own login session.
    pub async fn logout(&self, caller: &Caller) -> Result<(), ChatError> {
        let sid = caller.session_id.as_deref().ok_or_else(|| ChatError::Conflict("this token is not tied to a login session".into()))?;
        self.end_session(sid, &caller.user_id).await
    }

    /// The caller's live sessions, newest first. `expires_at` is when the
    /// session ends if it stays unused (idle expiry or maximum age, whichever first).
    pub async fn sessions(&self, caller: &Caller) -> Result<Vec<SessionView>, ChatError> {
        let now = self.now_ms();
        let idle = self.inner.sessions.idle_ms();
        let list = self.store().list_sessions(&caller.user_id).await?;
        Ok(list
            .into_iter()
            .filter(|s| !s.is_idle(now, idle))
            .map(|mut s| {
                s.expires_at = s.expires_at.min(s.last_seen_at.saturating_add(idle));
                SessionView::new(&s, caller.session_id.as_deref())
            })
            .collect())
    }

    /// Revokes one of the caller's sessions; its live connections close at once.
    pub async fn revoke_session(&self, caller: &Caller, id: &str) -> Result<(), ChatError> {
        match self.end_session(id, &caller.user_id).await {
            Err(ChatError::NotFound(_)) => Err(ChatError::NotFound("no such session".into())),
            other => other,
        }
    }

    /// Revokes every session of a user (an administrator's action, or a
    /// password change); returns how many were live.
    pub async fn revoke_user_sessions(&self, user_id: &str) -> Result<usize, ChatError> {
        let ids = self.store().revoke_user_sessions(user_id).await?;
        for id in &ids {
            self.inner.sessions.forget(id, user_id);
            self.close_session_connections(id).await;
        }
        Ok(ids.len())
    }

    /// A user by exact username (ignoring case, as usernames are unique that
    /// way), for adding them to a channel. Only signed-in callers reach it,
    /// under the per-user REST rate.
    pub async fn find_user(&self, username: &str) -> Result<PublicUserView, ChatError> {
        if username.is_empty() || username.chars().count() > validate::USERNAME_MAX {
            return Err(ChatError::invalid("username", format_args!("must be 1-{} characters", validate::USERNAME_MAX)));
        }
        let user = self.store().get_user_by_username(username).await?.ok_or_else(|| ChatError::NotFound("no user with this username".into()))?;
        Ok(PublicUserView::from(&user))
    }

    pub async fn me(&self, caller: &Caller) -> Result<UserView, ChatError> {
        let user = self.store().get_user(&caller.user_id).await?.ok_or_else(|| ChatError::NotFound("no such user".into()))?;
        Ok(UserView::from(&user))
    }

    // ------------------------------------------------------------ API keys

    /// Creates a key for the caller, narrowed by `scope` (an agent must be
    /// the caller's own; anyone else's is answered as a missing one).
    pub async fn create_api_key(&self, caller: &Caller, name: &str, scope: KeyScope) -> Result<ApiKeyCreated, ChatError> {
        validate::api_key_name(name)?;
        match &scope {
            KeyScope::Owner => {}
            KeyScope::Channels(channels) => crate::keys::valid_channels(channels)?,
            KeyScope::Agent(agent_id) => {
                let agent = self.store().get_agent(agent_id).await?;
                if agent.is_none_or(|a| a.owner_id != caller.user_id) {
                    return Err(ChatError::NotFound("agent_id: no agent of yours with this id".into()));
                }
            }
        }
        let max = usize::try_from(self.inner.deps.config.api_keys_per_user).unwrap_or(usize::MAX);
        // Not race-free: two concurrent creations may pass together, which a limit of this kind tolerates.
        let live = self.store().list_api_keys(&caller.user_id).await?.iter().filter(|k| k.revoked_at.is_none()).count();
        if live >= max {
            return Err(ChatError::LimitExceeded(format!("at most {max} API keys per user; revoke one first")));
        }
        let key = secrets::generate(secrets::API_KEY_PREFIX);
        let stored = self
            .store()
            .create_api_key(NewApiKey {
                user_id: caller.user_id.clone(),
                name: name.to_owned(),
                prefix: key.chars().take(secrets::API_KEY_DISPLAY_LEN).collect(),
                key_hash: secrets::digest(&key),
                scope: scope.encode(),
            })
            .await?;
        tracing::info!(user = %caller.user_id, key = %stored.id, "API key created");
        Ok(ApiKeyCreated { key, api_key: ApiKeyView::from(&stored) })
    }

    pub async fn api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyView>, ChatError> {
        Ok(self.store().list_api_keys(&caller.user_id).await?.iter().map(ApiKeyView::from).collect())
    }

    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<(), ChatError> {
        match self.store().revoke_api_key(&caller.user_id, id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(ChatError::NotFound("no such API key".into())),
            Err(e) => return Err(e.into()),
        }
        self.inner.api_keys.retain(|_, k| k.id != id);
        tracing::info!(user = %caller.user_id, key = %id, "API key revoked");
        Ok(())
    }

    /// A live key created through the API: its non-secret id
    /// (`api_key:<id>`), owner and scope; `None` otherwise. A store failure
    /// refuses the key.
    pub async fn check_api_key(&self, key: &str) -> Option<UserKey> {
        if !key.starts_with(secrets::API_KEY_PREFIX) || key.len() > secrets::MAX_SECRET_LEN {
            return None;
        }
        let hash = secrets::digest(key);
        let known = self.inner.api_keys.get(&hash);
        let entry = match known {
            Some(k) if k.checked.elapsed() < API_KEY_CACHE_TTL => k,
            _ => match self.store().get_live_api_key_by_hash(&hash).await {
                Ok(Some(stored)) => {
                    let now = Instant::now();
                    // Never touched by this node yet: due now.
                    let touched = known.map_or(now.checked_sub(API_KEY_TOUCH_EVERY).unwrap_or(now), |k| k.touched);
                    let scope = match KeyScope::decode(stored.scope.as_deref()) {
                        Ok(scope) => scope,
                        Err(e) => {
                            tracing::error!(error = %e, key = %stored.id, "API key refused");
                            return None;
                        }
                    };
                    let entry = KnownKey { id: stored.id.clone(), owner: stored.user_id.clone(), scope, checked: now, touched };
                    self.inner.api_keys.insert(hash.clone(), entry.clone(), |k| k.checked.elapsed() >= API_KEY_CACHE_TTL);
                    entry
                }
                Ok(None) => {
                    self.inner.api_keys.remove(&hash);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "API key lookup failed");
                    return None;
                }
            },
        };
        self.touch_api_key(hash, &entry.id).await;
        Some(UserKey { key_id: format!("api_key:{}", entry.id), owner: entry.owner, scope: entry.scope })
    }

    /// Whether a user's key may publish this event there ([`crate::keys`]).
    pub async fn authorize_key_publish(&self, key: &UserKey, channel: &ChannelName, event: EventType, data: &Payload) -> Result<(), ChatError> {
        crate::keys::authorize_publish(&self.inner.deps, &key.owner, &key.scope, channel, event, data).await
    }

    /// Records a key's use, at most once per [`API_KEY_TOUCH_EVERY`] per node.
    async fn touch_api_key(&self, hash: String, id: &str) {
        let due = self.inner.api_keys.get(&hash).is_none_or(|k| k.touched.elapsed() >= API_KEY_TOUCH_EVERY);
        if !due {
            return;
        }
        self.inner.api_keys.update(&hash, |k| k.touched = Instant::now());
        if let Err(e) = self.store().touch_api_key(id).await {
            tracing::debug!(error = %e, "recording an API key's use failed");
        }
    }
}
