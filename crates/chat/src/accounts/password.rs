//! Argon2id password hashing on a small pool of threads that reuse their memory.
//!
//! Each hash costs tens of milliseconds of CPU and 19 MiB of memory (the
//! argon2 crate's defaults, OWASP's recommendation). Allocating those 19 MiB
//! per hash on whichever blocking thread runs it made the allocator keep
//! one such block per thread and arena: a few dozen logins grew the process
//! by hundreds of megabytes for good. So hashing runs on [`POOL_THREADS`]
//! threads of our own, each holding one memory area for the life of the
//! pool, and a semaphore in front of them makes a burst of logins queue
//! (then answer 503) instead of starving the runtime or the machine.
//!
//! A login for an unknown user (or one without a password) is checked
//! against a dummy hash made with the same parameters, through the same
//! threads: it costs exactly one Argon2 computation, like a wrong password.
//! [`PasswordChecks`] counts those computations by kind of hash, so the
//! property is visible in `/metrics` and tested without timing anything.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{OnceCell, Semaphore, oneshot};
use zeroize::Zeroizing;

use crate::ChatError;

/// Threads hashing at once, each with its own memory area.
pub const POOL_THREADS: usize = 2;
/// Longest wait for a hashing slot before answering 503.
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Largest memory cost (KiB) a stored hash may ask for; anything above is
/// refused rather than letting one row make a thread allocate without bound.
const MAX_M_COST_KIB: u32 = 256 * 1024;

/// What a hashing thread is asked to do.
enum Work {
    Hash(Zeroizing<String>),
    /// The password, the stored hash, and the counter of the hash's kind.
    Verify(Zeroizing<String>, Arc<str>, Counter),
}

enum Done {
    Hashed(Result<String, ChatError>),
    Verified(bool),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Done>,
}

/// The hashing threads, started on first use, and the queue feeding them.
/// Dropping it ends the threads once they finish what they hold.
struct Pool {
    jobs: mpsc::Sender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    started: OnceLock<()>,
}

impl Pool {
    fn new() -> Self {
        let (jobs, queue) = mpsc::channel();
        Self { jobs, queue: Arc::new(Mutex::new(queue)), started: OnceLock::new() }
    }

    fn submit(&self, job: Job) -> Result<(), ChatError> {
        self.started.get_or_init(|| {
            for n in 0..POOL_THREADS {
                let queue = self.queue.clone();
                let spawned = std::thread::Builder::new().name(format!("chorus-argon2-{n}")).spawn(move || worker(&queue));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "a password hashing thread could not start");
                }
            }
        });
        self.jobs.send(job).map_err(|_| ChatError::Internal("password hashing threads are gone".into()))
    }
}

/// One hashing thread: takes jobs until the pool is dropped, always with the same memory.
fn worker(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        let job = {
            let Ok(rx) = queue.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let Job { work, reply } = job;
        // A panic ends this job (its caller sees an error), never the thread.
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| match work {
            Work::Hash(password) => Done::Hashed(memory.hash(&password)),
            Work::Verify(password, hash, computed) => Done::Verified(memory.verify(&password, &hash, &computed)),
        }));
        match done {
            Ok(done) => {
                let _ = reply.send(done);
            }
            Err(_) => {
                tracing::error!("password hashing panicked");
                memory = Memory::default();
            }
        }
    }
}

/// A thread's Argon2 memory area, allocated once at the size the parameters
/// need and reused for every hash.
#[derive(Default)]
struct Memory {
    blocks: Vec<Block>,
}

impl Memory {
    fn area(&mut self, params: &Params) -> &mut [Block] {
        let need = params.block_count();
        if self.blocks.len() < need {
            self.blocks = vec![Block::new(); need];
        }
        &mut self.blocks[..need]
    }

    fn hash(&mut self, password: &str) -> Result<String, ChatError> {
        let fail = |e: &dyn std::fmt::Display| ChatError::Internal(format!("password hashing failed: {e}"));
        let params = Params::default();
        let salt = Salt::generate();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        argon.hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, self.area(&params)).map_err(|e| fail(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
        };
        Ok(phc.to_string())
    }

    /// False for a malformed stored hash too (logged): the login fails rather than the server.
    /// `computed` counts the Argon2 computations actually run.
    fn verify(&mut self, password: &str, stored: &str, computed: &Counter) -> bool {
        match self.check(password, stored, computed) {
            Ok(matched) => matched,
            Err(e) => {
                tracing::error!(error = %e, "a stored password hash could not be checked");
                false
            }
        }
    }

    fn check(&mut self, password: &str, stored: &str, computed: &Counter) -> Result<bool, String> {
        let phc = PasswordHash::new(stored).map_err(|e| e.to_string())?;
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else { return Err("no salt or hash".into()) };
        let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(|e| e.to_string())?;
        let version = phc.version.map(Version::try_from).transpose().map_err(|e| e.to_string())?.unwrap_or_default();
        let params = Params::try_from(&phc).map_err(|e| e.to_string())?;
        if params.m_cost() > MAX_M_COST_KIB {
            return Err(format!("memory cost {} KiB is above {MAX_M_COST_KIB}", params.m_cost()));
        }
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        let argon = Argon2::new(algorithm, version, params.clone());
        argon.hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, self.area(&params)).map_err(|e| e.to_string())?;
        computed.inc();
        let output = Output::new(&out).map_err(|e| e.to_string())?;
        // `Output`'s equality is constant-time.
        Ok(output == *expected)
    }
}

/// Argon2 verifications run on the pool, by the kind of hash checked:
/// `account` (a stored hash) or `dummy` (no such user, or no password).
#[derive(Debug, Clone, Default)]
pub struct PasswordChecks {
    family: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl PasswordChecks {
    fn counter(&self, hash: &'static str) -> Counter {
        self.family.get_or_create(&vec![("hash", hash)]).clone()
    }

    /// Verifications run against `account` or `dummy` hashes so far.
    pub fn count(&self, hash: &'static str) -> u64 {
        self.counter(hash).get()
    }

    /// Registers `password_verifications_total{hash}`.
    pub fn register(&self, registry: &mut Registry) {
        // Both series exist from the start, at zero.
        self.counter("account");
        self.counter("dummy");
        registry.register("password_verifications", "Argon2 password verifications run, by kind of hash", self.family.clone());
    }
}

pub(crate) struct Passwords {
    slots: Arc<Semaphore>,
    pool: Pool,
    /// The hash an unknown user's login is checked against, so that it
    /// costs what a wrong password costs.
    dummy: OnceCell<Arc<str>>,
    checks: PasswordChecks,
}

/// Hashes on the current thread with memory of its own; for the CLI (one
/// hash, then the process ends). The server hashes through [`Passwords`].
pub fn hash_now(password: &str) -> Result<String, ChatError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ChatError::Internal(format!("password hashing failed: {e}")))
}

/// Checks on the current thread (tests compare the pool's hashes with the crate's own).
#[cfg(test)]
fn verify_now(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier as _;
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

impl Passwords {
    pub fn new() -> Self {
        Self { slots: Arc::new(Semaphore::new(POOL_THREADS)), pool: Pool::new(), dummy: OnceCell::new(), checks: PasswordChecks::default() }
    }

    pub fn checks(&self) -> &PasswordChecks {
        &self.checks
    }

    async fn run(&self, work: Work) -> Result<Done, ChatError> {
        let busy = || ChatError::Unavailable("the server is busy checking passwords; retry shortly".into());
        // A permit per job in flight: the threads' queue never holds more than they can take.
        let _permit = tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (reply, done) = oneshot::channel();
        self.pool.submit(Job { work, reply })?;
        done.await.map_err(|_| ChatError::Internal("password hashing failed on its thread".into()))
    }

    pub async fn hash(&self, password: String) -> Result<String, ChatError> {
        match self.run(Work::Hash(Zeroizing::new(password))).await? {
            Done::Hashed(result) => result,
            Done::Verified(_) => Err(ChatError::Internal("password hashing answered the wrong question".into())),
        }
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
        let (hash, counter): (Arc<str>, _) = match hash {
            Some(hash) => (Arc::from(hash), self.checks.counter("account")),
            None => (dummy, self.checks.counter("dummy")),
        };
        match self.run(Work::Verify(Zeroizing::new(password), hash, counter)).await? {
            Done::Verified(matched) => Ok(real && matched),
            Done::Hashed(_) => Err(ChatError::Internal("password hashing answered the wrong question".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_verifies() {
        let p = Passwords::new();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p.verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong horse".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
        assert!(!p.verify("x".into(), Some("not a phc string".into())).await.unwrap());
        // The pool's hashes are the crate's own format, both ways.
        assert!(verify_now("correct horse", &h));
        let theirs = hash_now("battery staple").unwrap();
        assert!(p.verify("battery staple".into(), Some(theirs)).await.unwrap());
    }

    #[tokio::test]
    async fn a_missing_hash_costs_one_verification_against_a_dummy_of_the_same_parameters() {
        let p = Passwords::new();
        let real = p.hash("correct horse".into()).await.unwrap();
        let dummy = p.prepare().await.unwrap();
        // Same algorithm, version and costs: only salt and output differ.
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_owned();
        assert_eq!(params(&dummy), params(&real));
        assert!(!p.verify("anything".into(), None).await.unwrap());
        assert_eq!((p.checks().count("account"), p.checks().count("dummy")), (0, 1));
        assert!(!p.verify("anything".into(), Some(real)).await.unwrap());
        assert_eq!((p.checks().count("account"), p.checks().count("dummy")), (1, 1));
        // A malformed stored hash runs no computation and says so.
        assert!(!p.verify("x".into(), Some("not a phc string".into())).await.unwrap());
        assert_eq!((p.checks().count("account"), p.checks().count("dummy")), (1, 1));
    }

    #[tokio::test]
    async fn stored_hashes_with_other_costs_verify_and_absurd_costs_are_refused() {
        let p = Passwords::new();
        let small = Params::new(4096, 1, 1, None).unwrap();
        let h = Argon2::new(Algorithm::Argon2id, Version::V0x13, small).hash_password(b"pw-small-cost").unwrap().to_string();
        assert!(p.verify("pw-small-cost".into(), Some(h.clone())).await.unwrap());
        // A larger area after a smaller one, and back.
        let d = p.hash("default cost".into()).await.unwrap();
        assert!(p.verify("default cost".into(), Some(d)).await.unwrap());
        assert!(p.verify("pw-small-cost".into(), Some(h)).await.unwrap());
        let absurd = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!p.verify("x".into(), Some(absurd.into())).await.unwrap());
    }

    #[tokio::test]
    async fn every_hash_runs_on_the_pool_threads() {
        let p = Passwords::new();
        let mut hashes = Vec::new();
        for i in 0..6 {
            hashes.push(p.hash(format!("password-{i}")).await.unwrap());
        }
        // nextest runs each test in a process of its own: these are this pool's threads.
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .filter(|n| n.starts_with("chorus-argon2"))
            .collect();
        assert_eq!(names.len(), POOL_THREADS, "{names:?}");
        for (i, h) in hashes.iter().enumerate() {
            assert!(p.verify(format!("password-{i}"), Some(h.clone())).await.unwrap());
        }
    }
}
