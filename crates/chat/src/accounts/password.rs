//! Argon2id password hashing, off the async runtime.
//!
//! Each hash costs tens of milliseconds of CPU and 19 MiB of memory (the
//! argon2 crate's defaults, OWASP's recommendation), so hashing runs on the
//! blocking pool behind a small semaphore: a burst of logins queues there
//! instead of starving the runtime's workers or the machine's memory.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::Argon2;
use tokio::sync::{OnceCell, Semaphore};

use crate::ChatError;

/// Hashes running at once.
const CONCURRENCY: usize = 2;
/// Longest wait for a hashing slot before answering 503.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Passwords {
    slots: Arc<Semaphore>,
    /// The hash an unknown user's login is checked against, so that it
    /// costs what a wrong password costs.
    dummy: OnceCell<Arc<str>>,
}

/// Hashes on the current thread; for the CLI and for the blocking pool.
pub fn hash_now(password: &str) -> Result<String, ChatError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ChatError::Internal(format!("password hashing failed: {e}")))
}

/// False for a malformed stored hash too (logged): the login fails rather than the server.
fn verify_now(password: &str, hash: &str) -> bool {
    match Argon2::default().verify_password(password.as_bytes(), hash) {
        Ok(()) => true,
        Err(argon2::password_hash::Error::PasswordInvalid) => false,
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash could not be checked");
            false
        }
    }
}

impl Passwords {
    pub fn new() -> Self {
        Self { slots: Arc::new(Semaphore::new(CONCURRENCY)), dummy: OnceCell::new() }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ChatError> {
        let busy = || ChatError::Unavailable("the server is busy checking passwords; retry shortly".into());
        let permit = tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let out = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| ChatError::Internal(format!("password hashing task failed: {e}")))?;
        Ok(out)
    }

    pub async fn hash(&self, password: String) -> Result<String, ChatError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Prepares the dummy hash (at start, so the first unknown-user login is not slower).
    pub async fn prepare(&self) -> Result<Arc<str>, ChatError> {
        self.dummy
            .get_or_try_init(|| async {
                let random = format!("{:032x}", rand::random::<u128>());
                self.hash(random).await.map(Arc::from)
            })
            .await
            .cloned()
    }

    /// Checks `password` against `hash`; without a hash (unknown user, or
    /// one who signs in only through an identity provider) checks it against
    /// the dummy hash, which takes as long, and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ChatError> {
        let dummy = self.prepare().await?;
        let real = hash.is_some();
        let hash: Arc<str> = hash.map_or(dummy, Arc::from);
        let matched = self.run(move || verify_now(&password, &hash)).await?;
        Ok(real && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_verifies() {
        let p = Passwords::new();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(p.verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
        assert!(!p.verify("x".into(), Some("not a phc string".into())).await.unwrap());
    }
}
