//! Who runs next: per-person queues, oldest run first, served round-robin
//! across people under the node's worker cap, with at most one run per agent
//! and channel at a time. Pure bookkeeping (no I/O), under the runtime's lock.
//!
//! Bounds: a person has at most `runs_per_user` runs outstanding (waiting or
//! running), of which `running_per_user` run at once; the node runs
//! `max_running` and keeps `max_waiting` waiting. A run past a bound is
//! refused (the caller ends it with `queue_full`).

use std::collections::{HashMap, VecDeque};

/// The queue's bounds (from `[agents]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_running: usize,
    pub max_waiting: usize,
    pub runs_per_user: usize,
    pub running_per_user: usize,
}

/// One run in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub run_id: String,
    pub agent_id: String,
    pub channel_id: String,
    /// The person accountable (empty when none is known).
    pub user: String,
    /// When the run was created (Unix ms): a person's runs wait in this
    /// order, so a run admitted late (taken from another node) keeps its place.
    pub created_at: i64,
}

impl Ticket {
    fn pair(&self) -> (String, String) {
        (self.agent_id.clone(), self.channel_id.clone())
    }
}

/// What admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Waiting; `position` counts the person's waiting runs up to this one
    /// (older runs first).
    Waiting { position: u32 },
    /// Past a bound; the run must end with `queue_full`.
    Refused(Full),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The person's outstanding runs.
    User,
    /// The node's waiting runs.
    Node,
}

#[derive(Default)]
struct UserQueue {
    waiting: VecDeque<Waiting>,
    running: usize,
}

struct Waiting {
    ticket: Ticket,
    /// Not handed out until its `agent_queued` is published.
    ready: bool,
}

/// The agent-and-channel pairs with a run going or waiting.
#[derive(Default)]
struct PairState {
    running: Option<String>,
    waiting: Vec<String>,
}

pub struct Queues {
    limits: QueueLimits,
    users: HashMap<String, UserQueue>,
    /// People with waiting runs, in serving order.
    ring: VecDeque<String>,
    pairs: HashMap<(String, String), PairState>,
    running: usize,
    waiting: usize,
}

impl Queues {
    pub fn new(limits: QueueLimits) -> Self {
        Queues { limits, users: HashMap::new(), ring: VecDeque::new(), pairs: HashMap::new(), running: 0, waiting: 0 }
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The run going and the runs waiting for an agent in a channel.
    pub fn pair(&self, agent_id: &str, channel_id: &str) -> (Option<String>, Vec<String>) {
        match self.pairs.get(&(agent_id.to_owned(), channel_id.to_owned())) {
            Some(p) => (p.running.clone(), p.waiting.clone()),
            None => (None, Vec::new()),
        }
    }

    /// Adds a run at the end of its person's queue (not handed out before `ready`).
    pub fn admit(&mut self, ticket: Ticket) -> Admission {
        let user = self.users.entry(ticket.user.clone()).or_default();
        if user.waiting.len() + user.running >= self.limits.runs_per_user {
            self.drop_if_idle(&ticket.user);
            return Admission::Refused(Full::User);
        }
        if self.waiting >= self.limits.max_waiting {
            self.drop_if_idle(&ticket.user);
            return Admission::Refused(Full::Node);
        }
        let was_idle = user.waiting.is_empty();
        let index = user.waiting.iter().position(|w| w.ticket.created_at > ticket.created_at).unwrap_or(user.waiting.len());
        user.waiting.insert(index, Waiting { ticket: ticket.clone(), ready: false });
        let position = u32::try_from(index + 1).unwrap_or(u32::MAX);
        if was_idle {
            self.ring.push_back(ticket.user.clone());
        }
        self.pairs.entry(ticket.pair()).or_default().waiting.push(ticket.run_id.clone());
        self.waiting += 1;
        Admission::Waiting { position }
    }

    /// Lets a waiting run be handed out.
    pub fn ready(&mut self, user: &str, run_id: &str) {
        if let Some(w) = self.users.get_mut(user).and_then(|u| u.waiting.iter_mut().find(|w| w.ticket.run_id == run_id)) {
            w.ready = true;
        }
    }

    /// The next run to start, marked running, or `None` when nothing can
    /// start now. People take turns; each person's runs start in order,
    /// except that a run whose agent is busy in its channel lets the
    /// person's next runs go first.
    pub fn start_next(&mut self) -> Option<Ticket> {
        if self.running >= self.limits.max_running {
            return None;
        }
        for _ in 0..self.ring.len() {
            let user_id = self.ring.pop_front()?;
            let Some(user) = self.users.get_mut(&user_id) else { continue };
            let pick = if user.running < self.limits.running_per_user {
                user.waiting.iter().position(|w| {
                    w.ready && self.pairs.get(&w.ticket.pair()).is_none_or(|p| p.running.is_none())
                })
            } else {
                None
            };
            let Some(index) = pick else {
                self.ring.push_back(user_id);
                continue;
            };
            let Some(waiting) = user.waiting.remove(index) else { continue };
            user.running += 1;
            if !user.waiting.is_empty() {
                self.ring.push_back(user_id);
            }
            let ticket = waiting.ticket;
            let pair = self.pairs.entry(ticket.pair()).or_default();
            pair.waiting.retain(|r| r != &ticket.run_id);
            pair.running = Some(ticket.run_id.clone());
            self.waiting -= 1;
            self.running += 1;
            return Some(ticket);
        }
        None
    }

    /// A run handed out by `next` has ended.
    pub fn finished(&mut self, ticket: &Ticket) {
        if let Some(user) = self.users.get_mut(&ticket.user) {
            user.running = user.running.saturating_sub(1);
        }
        let pair = ticket.pair();
        if let Some(state) = self.pairs.get_mut(&pair) {
            if state.running.as_deref() == Some(ticket.run_id.as_str()) {
                state.running = None;
            }
            if state.running.is_none() && state.waiting.is_empty() {
                self.pairs.remove(&pair);
            }
        }
        self.running = self.running.saturating_sub(1);
        self.drop_if_idle(&ticket.user);
    }

    /// Takes a waiting run out (cancelled before it started).
    pub fn remove_waiting(&mut self, run_id: &str) -> Option<Ticket> {
        let (user_id, index) = self
            .users
            .iter()
            .find_map(|(id, u)| u.waiting.iter().position(|w| w.ticket.run_id == run_id).map(|i| (id.clone(), i)))?;
        let user = self.users.get_mut(&user_id)?;
        let ticket = user.waiting.remove(index)?.ticket;
        if user.waiting.is_empty() {
            self.ring.retain(|u| u != &user_id);
        }
        let pair = ticket.pair();
        if let Some(state) = self.pairs.get_mut(&pair) {
            state.waiting.retain(|r| r != run_id);
            if state.running.is_none() && state.waiting.is_empty() {
                self.pairs.remove(&pair);
            }
        }
        self.waiting -= 1;
        self.drop_if_idle(&user_id);
        Some(ticket)
    }

    fn drop_if_idle(&mut self, user_id: &str) {
        if self.users.get(user_id).is_some_and(|u| u.waiting.is_empty() && u.running == 0) {
            self.users.remove(user_id);
        }
    }

    /// People with runs in the queue (a bound check for tests and health).
    pub fn people(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(run: &str, agent: &str, user: &str) -> Ticket {
        Ticket { run_id: run.into(), agent_id: agent.into(), channel_id: "c".into(), user: user.into(), created_at: 0 }
    }

    fn limits() -> QueueLimits {
        QueueLimits { max_running: 100, max_waiting: 1000, runs_per_user: 10, running_per_user: 2 }
    }

    fn admit_ready(q: &mut Queues, ticket: Ticket) -> Admission {
        let (user, run) = (ticket.user.clone(), ticket.run_id.clone());
        let a = q.admit(ticket);
        q.ready(&user, &run);
        a
    }

    #[test]
    fn a_person_runs_two_at_once_and_keeps_ten_outstanding() {
        let mut q = Queues::new(limits());
        for i in 0..10 {
            assert_eq!(admit_ready(&mut q, t(&format!("r{i}"), &format!("a{i}"), "alice")), Admission::Waiting { position: i + 1 });
        }
        assert_eq!(admit_ready(&mut q, t("r10", "a10", "alice")), Admission::Refused(Full::User));
        assert_eq!(admit_ready(&mut q, t("b0", "b", "bob")), Admission::Waiting { position: 1 }, "others unaffected");
        let started: Vec<String> = std::iter::from_fn(|| q.start_next()).map(|t| t.run_id).collect();
        assert_eq!(started, vec!["r0", "b0", "r1"], "two of alice's, bob's in between");
        assert_eq!((q.running(), q.waiting()), (3, 8));
        q.finished(&t("r0", "a0", "alice"));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("r2".into()), "first in, first out");
        assert_eq!(admit_ready(&mut q, t("r11", "a11", "alice")), Admission::Waiting { position: 8 }, "a finished run frees a place");
        assert_eq!(admit_ready(&mut q, t("r12", "a12", "alice")), Admission::Refused(Full::User));
    }

    #[test]
    fn round_robin_across_people_under_the_node_cap() {
        let mut q = Queues::new(QueueLimits { max_running: 3, ..limits() });
        for (run, user) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            admit_ready(&mut q, t(run, run, user));
        }
        let order: Vec<String> = std::iter::from_fn(|| q.start_next()).map(|t| t.run_id).collect();
        assert_eq!(order, vec!["a1", "b1", "c1"]);
        assert!(q.start_next().is_none(), "node cap");
        q.finished(&t("b1", "b1", "b"));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("a2".into()));
    }

    #[test]
    fn one_run_per_agent_and_channel_and_readiness() {
        let mut q = Queues::new(limits());
        admit_ready(&mut q, t("r1", "helper", "alice"));
        assert_eq!(q.admit(t("r2", "helper", "bob")), Admission::Waiting { position: 1 });
        admit_ready(&mut q, t("r3", "other", "alice"));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("r1".into()));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("r3".into()), "r2 is not ready, and its agent is busy");
        assert_eq!(q.pair("helper", "c"), (Some("r1".into()), vec!["r2".into()]));
        q.ready("bob", "r2");
        assert!(q.start_next().is_none(), "the agent is busy in the channel");
        q.finished(&t("r1", "helper", "alice"));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("r2".into()));
    }

    #[test]
    fn a_run_admitted_late_waits_in_its_order_of_creation() {
        let mut q = Queues::new(limits());
        let at = |run: &str, created_at: i64| Ticket { created_at, ..t(run, "helper", "alice") };
        admit_ready(&mut q, at("r1", 1));
        assert_eq!(q.start_next().map(|t| t.run_id), Some("r1".into()));
        assert_eq!(admit_ready(&mut q, at("r3", 3)), Admission::Waiting { position: 1 });
        // Older, taken late (it waited for this node elsewhere).
        assert_eq!(admit_ready(&mut q, at("r2", 2)), Admission::Waiting { position: 1 });
        assert_eq!(admit_ready(&mut q, at("r4", 3)), Admission::Waiting { position: 3 }, "equal times keep admission order");
        q.finished(&at("r1", 1));
        let order: Vec<String> = std::iter::from_fn(|| {
            let next = q.start_next()?;
            q.finished(&next);
            Some(next.run_id)
        })
        .collect();
        assert_eq!(order, vec!["r2", "r3", "r4"]);
    }

    #[test]
    fn removing_and_finishing_leave_nothing_behind() {
        let mut q = Queues::new(QueueLimits { max_waiting: 2, ..limits() });
        admit_ready(&mut q, t("r1", "a", "alice"));
        admit_ready(&mut q, t("r2", "b", "bob"));
        assert_eq!(q.admit(t("r3", "c", "carol")), Admission::Refused(Full::Node));
        assert_eq!(q.remove_waiting("r2").map(|t| t.run_id), Some("r2".into()));
        assert_eq!(q.remove_waiting("r2"), None);
        let r1 = q.start_next().unwrap();
        q.finished(&r1);
        assert_eq!((q.running(), q.waiting(), q.people(), q.pairs.len(), q.ring.len()), (0, 0, 0, 0, 0));
    }
}
