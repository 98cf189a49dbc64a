//! The runtime: takes committed runs (from the intake, and from the store at
//! start and on rescans), queues them, runs them under the node's caps, and
//! watches them (silence watchdog, shutdown).
//!
//! Several nodes share the runs of one store: a node takes a run by
//! claiming it in the store (`claim_run`: one owner per run, the per-user
//! limit counted over every node, and one node at a time for an agent's runs
//! in a channel, so `on_busy` holds across nodes), and only the owner
//! produces its events. A node that ends a run of an agent in a channel
//! takes the pair's runs that waited for it, oldest first. Cancels reach the owner as a control message ([`crate::routing`]);
//! the rescan takes over queued runs of nodes whose heartbeat stopped and
//! ends their running runs as `interrupted`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_chat::Chat;
use chorus_chat::agents::OnBusy;
use chorus_core::Hub;
use chorus_core::metrics::CoreMetrics;
use chorus_llm::{Models, TokenCounter};
use chorus_protocol::RunErrorCode;
use chorus_store::{Run, RunClaim, RunClaimRequest, RunStatus, Store};
use chorus_tools::ToolRegistry;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::AgentsConfig;
use crate::events::{Ending, RunEvent};
use crate::intake::IntakeReceiver;
use crate::ledger::{AnswerPlan, Origin, RunLedger, Stop};
use crate::metrics::AgentMetrics;
use crate::queue::{Admission, QueueLimits, Queues, Ticket};
use crate::routing::OwnerWatch;
use crate::run_loop;

/// Runs read per rescan page.
const RESCAN_PAGE: u32 = 500;
/// Active runs of a channel read when a run ends, to take the next of its
/// agent (more wait for the rescan).
const PAIR_PAGE: u32 = 50;

/// What the composition root hands in.
pub struct RuntimeParts {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub chat: Chat,
    pub models: Models,
    pub tools: ToolRegistry,
    pub tokens: TokenCounter,
    pub config: AgentsConfig,
    pub metrics: AgentMetrics,
    /// For panics caught in runs (`chorus_panics_total{task="agent_run"}`).
    pub core_metrics: CoreMetrics,
    pub intake: IntakeReceiver,
    /// Delivers external agents' runs; `None`: their runs end with `agent_unavailable`.
    pub webhooks: Option<chorus_external::WebhookClient>,
}

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub chat: Chat,
    pub models: Models,
    pub tools: ToolRegistry,
    pub tokens: TokenCounter,
    pub config: AgentsConfig,
    pub ledger: RunLedger,
    pub metrics: AgentMetrics,
    core_metrics: CoreMetrics,
    queues: Mutex<Queues>,
    /// Run tasks; shutdown waits for them.
    runs: TaskTracker,
    /// Background tasks (intake, watchdog, rescan).
    background: TaskTracker,
    stop_background: CancellationToken,
    /// No new runs are taken (shutdown).
    closing: AtomicBool,
    /// A run task finished (shutdown waits on it).
    finished: Notify,
    pub webhooks: Option<chorus_external::WebhookClient>,
    /// External runs being delivered here, and what their services pushed.
    pub inbound: crate::external::InboundRuns,
    /// What the hub routes other nodes' run controls to (it holds it weakly).
    routes: Mutex<Option<Arc<dyn chorus_core::RunControls>>>,
}

impl Shared {
    pub(crate) fn keep_routes(&self, routes: Arc<dyn chorus_core::RunControls>) {
        *self.routes.lock() = Some(routes);
    }

    /// Tasks that shutdown waits for.
    pub(crate) fn background_tracker(&self) -> TaskTracker {
        self.runs.clone()
    }
}

/// The agent runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime(pub(crate) Arc<Shared>);

impl Runtime {
    /// Ends the runs a crash left `running` (`interrupted`), then starts the
    /// intake, the watchdog and the rescan (which resumes queued runs).
    pub async fn start(parts: RuntimeParts) -> Result<Runtime, chorus_store::StoreError> {
        let RuntimeParts { store, hub, chat, models, tools, tokens, config, metrics, core_metrics, intake, webhooks } = parts;
        let limits = QueueLimits {
            max_running: config.max_concurrent_runs,
            max_waiting: config.max_queued_runs,
            runs_per_user: config.runs_per_user,
            running_per_user: config.running_per_user,
        };
        let ledger = RunLedger::new(store.clone(), hub.clone(), metrics.clone());
        let shared = Arc::new(Shared {
            store,
            hub,
            chat,
            models,
            tools,
            tokens,
            config,
            ledger,
            metrics,
            core_metrics,
            queues: Mutex::new(Queues::new(limits)),
            runs: TaskTracker::new(),
            background: TaskTracker::new(),
            stop_background: CancellationToken::new(),
            closing: AtomicBool::new(false),
            finished: Notify::new(),
            webhooks,
            inbound: crate::external::InboundRuns::default(),
            routes: Mutex::new(None),
        });
        let runtime = Runtime(shared);
        runtime.0.hub.route_run_controls(crate::routing::controls(&runtime));
        if !runtime.0.config.enabled {
            tracing::info!("agent runtime disabled on this node: runs wait in the store for a node that runs them");
            return Ok(runtime);
        }
        // At start, owners missing from the live nodes are dead at once: this
        // process's earlier incarnation among them.
        let mut owners = OwnerWatch::at_start(runtime.0.hub.live_nodes().await);
        let interrupted = runtime.sweep_interrupted(&mut owners).await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "runs left running by a process that stopped ended as interrupted");
        }
        runtime.spawn_background(intake, owners);
        Ok(runtime)
    }

    pub fn ledger(&self) -> &RunLedger {
        &self.0.ledger
    }

    pub fn config(&self) -> &AgentsConfig {
        &self.0.config
    }

    /// Shutting down: no new runs are taken.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
    }

    /// Runs executing and waiting on this node.
    pub fn counts(&self) -> (usize, usize) {
        let q = self.0.queues.lock();
        (q.running(), q.waiting())
    }

    /// Takes a committed run: queues it (publishing `agent_queued`) or ends
    /// it at once (`queue_full`, `busy`, an agent that is gone), then starts
    /// what can start. A run already taken is left alone.
    pub async fn admit(&self, run: Run, origin: Origin) {
        self.take(run, origin, None).await
    }

    /// This node's id, as runs record their owner.
    pub fn node(&self) -> &str {
        self.0.hub.node().as_str()
    }

    /// [`Runtime::admit`], claiming the run in the store first: unowned, or
    /// this node's, or (`dead_owner`) taken over from a node that stopped.
    async fn take(&self, run: Run, origin: Origin, dead_owner: Option<&str>) {
        let shared = &self.0;
        if !shared.config.enabled || shared.closing.load(Ordering::Acquire) || !run.status.is_active() {
            return;
        }
        if shared.ledger.get(&run.id).is_some() {
            return;
        }
        if run.status == RunStatus::Running {
            // Running elsewhere (or left so by a crash): not ours to start.
            return;
        }
        // A run taken over may have had events published by its first owner.
        let origin = if dead_owner.is_some() { Origin::Resumed } else { origin };
        let Some(live) = shared.ledger.open(run, origin) else { return };
        self.admit_live(live, dead_owner).await;
    }

    /// Admits a run opened in the ledger (see [`Runtime::admit`]): claims it
    /// in the store first (unowned, or this node's, or, with `dead_owner`,
    /// taken over from a node that stopped).
    pub(crate) async fn admit_live(&self, live: Arc<crate::ledger::LiveRun>, dead_owner: Option<&str>) {
        let shared = &self.0;
        let run = live.run().clone();
        let runs_per_user = u32::try_from(shared.config.runs_per_user).unwrap_or(u32::MAX);
        let claim = RunClaimRequest { run_id: &run.id, node: self.node(), dead_owner, runs_per_user };
        match shared.store.claim_run(claim).await {
            Ok(RunClaim::Claimed(_)) => {}
            // Ended here (the claim wrote nothing; the ending is a compare-and-set).
            Ok(RunClaim::UserFull(_)) => {
                let message = format!("you already have {} agent runs waiting or running; wait for one to finish", shared.config.runs_per_user);
                self.end(&run.id, Ending::failed(RunErrorCode::QueueFull, message)).await;
                return;
            }
            Ok(RunClaim::Taken(_)) => {
                shared.ledger.forget(&run.id);
                return;
            }
            Ok(RunClaim::Busy { owner, .. }) => {
                self.busy_elsewhere(&live, &owner).await;
                return;
            }
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "run not claimed; the next rescan retries");
                shared.ledger.forget(&run.id);
                return;
            }
        }
        let span = tracing::info_span!("run", run_id = %run.id, agent_id = %run.agent_id, channel_id = %run.channel_id);
        async {
            let Some(agent) = self.agent_of(&run).await else { return };
            let (running, waiting) = shared.queues.lock().pair(&run.agent_id, &run.channel_id);
            let busy = running.is_some() || !waiting.is_empty();
            match OnBusy::from_stored(&agent.on_busy) {
                OnBusy::Reject if busy => {
                    self.end(&run.id, Ending::failed(RunErrorCode::Busy, busy_message(&agent))).await;
                    return;
                }
                OnBusy::Interrupt if busy => self.interrupt(running, waiting),
                _ => {}
            }
            let ticket = Ticket {
                run_id: run.id.clone(),
                agent_id: run.agent_id.clone(),
                channel_id: run.channel_id.clone(),
                user: run.triggered_by.clone().unwrap_or_default(),
                created_at: run.created_at,
            };
            let admission = shared.queues.lock().admit(ticket.clone());
            match admission {
                Admission::Refused(full) => {
                    let message = match full {
                        crate::queue::Full::User => format!(
                            "you already have {} agent runs waiting or running; wait for one to finish",
                            shared.config.runs_per_user
                        ),
                        crate::queue::Full::Node => "the server has too many agent runs waiting; try again later".to_owned(),
                    };
                    self.end(&run.id, Ending::failed(RunErrorCode::QueueFull, message)).await;
                }
                Admission::Waiting { position } => {
                    shared
                        .ledger
                        .emit(&live, RunEvent::Queued { position, trigger_message_id: run.trigger_message_id.clone() })
                        .await;
                    shared.queues.lock().ready(&ticket.user, &ticket.run_id);
                    self.dispatch();
                }
            }
        }
        .instrument(span)
        .await;
        self.update_gauges();
    }

    /// The agent has a run going or waiting in the channel on another node
    /// (`owner`), so this run was not claimed. `reject` ends it here with
    /// `busy` (guarded: if a node claimed it meanwhile, that node decides);
    /// `enqueue` and `interrupt` leave it queued and unowned for the owner,
    /// which takes it when its run of the pair ends or at its next rescan,
    /// and applies the policy there. A run carrying a client's frontend
    /// tools or tool results cannot run elsewhere (they live here only): it
    /// ends with `busy` too.
    async fn busy_elsewhere(&self, live: &crate::ledger::LiveRun, owner: &str) {
        let shared = &self.0;
        let run = live.run();
        let Some(agent) = self.agent_of(run).await else { return };
        let client = live.client();
        if OnBusy::from_stored(&agent.on_busy) == OnBusy::Reject {
            self.end(&run.id, Ending::failed(RunErrorCode::Busy, busy_message(&agent))).await;
        } else if !client.frontend_tools.is_empty() || !client.continuation.is_empty() {
            let message = format!(
                "{} is busy in this channel on another server, and a run with frontend tools or tool results runs only here; try again when it has answered",
                agent.name
            );
            self.end(&run.id, Ending::failed(RunErrorCode::Busy, message)).await;
        } else {
            tracing::debug!(run_id = %run.id, %owner, "agent busy in the channel on another node; the run waits for that node");
            shared.ledger.forget(&run.id);
        }
    }

    /// The run's agent. `None` when it is gone (the run then ends
    /// `agent_unavailable`) or cannot be read (the run stays queued in the
    /// store for the next rescan).
    async fn agent_of(&self, run: &Run) -> Option<chorus_store::Agent> {
        match self.0.store.get_agent(&run.agent_id).await {
            Ok(Some(agent)) => Some(agent),
            Ok(None) => {
                self.end(&run.id, Ending::failed(RunErrorCode::AgentUnavailable, "the agent no longer exists")).await;
                None
            }
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "agent not read; the run waits for the next rescan");
                self.0.ledger.forget(&run.id);
                None
            }
        }
    }

    /// After a run of `agent_id` in `channel_id` ended here: takes the
    /// pair's next queued runs that nobody owns (they waited for this node,
    /// or for the pair to be free), oldest first, so they start now rather
    /// than at the next rescan.
    async fn take_next_of_pair(&self, agent_id: &str, channel_id: &str) {
        let shared = &self.0;
        if !shared.config.enabled || shared.closing.load(Ordering::Acquire) {
            return;
        }
        let runs = match shared.store.list_channel_runs(channel_id, chorus_store::RunFilter::Active, PAIR_PAGE).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(%channel_id, error = %e, "queued runs not read; the next rescan takes them");
                return;
            }
        };
        for run in runs {
            if run.agent_id == agent_id && run.status == RunStatus::Queued && run.node_id.is_none() {
                self.take(run, Origin::Fresh, None).await;
            }
        }
    }

    /// `on_busy = "interrupt"`: the agent's waiting runs in the channel end
    /// and its running one is stopped, all with `superseded`.
    fn interrupt(&self, running: Option<String>, waiting: Vec<String>) {
        for run_id in waiting {
            if self.0.queues.lock().remove_waiting(&run_id).is_some() {
                let me = self.clone();
                self.0.runs.spawn(async move {
                    me.end(&run_id, Ending::failed(RunErrorCode::Superseded, Stop::Superseded.message())).await;
                });
            }
        }
        if let Some(run_id) = running {
            let me = self.clone();
            self.0.runs.spawn(async move {
                if let Err(e) = me.0.ledger.stop(&run_id, Stop::Superseded, me.0.config.cancel_grace).await {
                    tracing::warn!(%run_id, error = %e, "superseded run not ended");
                }
            });
        }
    }

    /// Cancels a run: a waiting one leaves its queue and ends at once; a
    /// running one is asked to stop (keeping its partial answer) and ended
    /// directly if it does not within the grace. Idempotent.
    pub async fn cancel(&self, run_id: &str, reason: Stop) -> Result<(), chorus_store::StoreError> {
        let removed = self.0.queues.lock().remove_waiting(run_id);
        if let Some(ticket) = removed {
            self.end(run_id, Ending::failed(reason.code(), reason.message())).await;
            self.update_gauges();
            // It held its agent's place in the channel for this node.
            self.spawn_take_next(ticket.agent_id, ticket.channel_id);
            return Ok(());
        }
        self.0.ledger.stop(run_id, reason, self.0.config.cancel_grace).await.map(|_| ())
    }

    async fn end(&self, run_id: &str, ending: Ending) {
        if let Err(e) = self.0.ledger.end(run_id, ending, AnswerPlan::default()).await {
            tracing::error!(%run_id, error = %e, "run not ended; the watchdog or the next start will");
        }
    }

    /// Takes the pair's next queued runs in a task of its own (see
    /// [`Runtime::take_next_of_pair`]).
    fn spawn_take_next(&self, agent_id: String, channel_id: String) {
        let me = self.clone();
        self.0.runs.spawn(async move { me.take_next_of_pair(&agent_id, &channel_id).await });
    }

    /// Starts every run that can start now.
    fn dispatch(&self) {
        loop {
            let next = self.0.queues.lock().start_next();
            let Some(ticket) = next else { break };
            let me = self.clone();
            self.0.runs.spawn(async move { me.execute(ticket).await });
        }
        self.update_gauges();
    }

    async fn execute(self, ticket: Ticket) {
        let shared = &self.0;
        if let Some(live) = shared.ledger.get(&ticket.run_id) {
            let span = tracing::info_span!("run", run_id = %ticket.run_id, agent_id = %ticket.agent_id, channel_id = %ticket.channel_id);
            let work = Self::work(shared.clone(), live).instrument(span.clone());
            let outcome = chorus_core::supervise::catch_panic(&shared.core_metrics, "agent_run", work).await;
            if outcome.is_none() {
                let ending = Ending::failed(RunErrorCode::Internal, "the run failed unexpectedly; the logs have its id");
                self.end(&ticket.run_id, ending).instrument(span).await;
            }
        }
        shared.queues.lock().finished(&ticket);
        shared.finished.notify_waiters();
        if !shared.closing.load(Ordering::Acquire) {
            // The pair's runs that waited for this node join the queue before
            // anything starts, so they go in their order of creation.
            self.take_next_of_pair(&ticket.agent_id, &ticket.channel_id).await;
            self.dispatch();
        }
        self.update_gauges();
    }

    /// An external agent's run goes to its webhook; a hosted one to the run loop.
    async fn work(shared: Arc<Shared>, live: Arc<crate::ledger::LiveRun>) {
        if let Ok(Some(agent)) = shared.store.get_agent(&live.run().agent_id).await
            && agent.is_external()
        {
            return crate::external::run(shared, live, agent).await;
        }
        run_loop::run(shared, live).await
    }

    fn update_gauges(&self) {
        let (running, waiting) = self.counts();
        self.0.metrics.active_runs.set(i64::try_from(running).unwrap_or(i64::MAX));
        self.0.metrics.queued_runs.set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Ends, as `interrupted`, every run the store has `running` that no
    /// live node produces: this node's (or nobody's) that it is not running
    /// (left so by an earlier process), and those of nodes judged dead.
    async fn sweep_interrupted(&self, owners: &mut OwnerWatch) -> Result<usize, chorus_store::StoreError> {
        let mut ended = 0;
        let mut after = None;
        loop {
            let page = self.0.store.list_runs_with_status(RunStatus::Running, after.clone(), RESCAN_PAGE).await?;
            let full = page.len() == RESCAN_PAGE as usize;
            for run in &page {
                if self.0.ledger.get(&run.id).is_some() {
                    continue;
                }
                let orphan = match run.node_id.as_deref() {
                    None => true,
                    Some(owner) if owner == self.node() => true,
                    Some(owner) => owners.is_dead(owner),
                };
                if !orphan {
                    continue;
                }
                let ending = Ending::failed(RunErrorCode::Interrupted, "the server running the run stopped while it was going");
                if let crate::ledger::EndOutcome::Ended(_) = self.0.ledger.end(&run.id, ending, AnswerPlan::default()).await? {
                    tracing::warn!(run_id = %run.id, owner = run.node_id.as_deref().unwrap_or("-"), "run of a stopped node ended as interrupted");
                    ended += 1;
                }
            }
            after = page.last().map(|r| (r.created_at, r.id.clone()));
            if !full {
                return Ok(ended);
            }
        }
    }

    /// Admits every queued run of the store this node may take: unowned
    /// ones as `origin` (the first pass after start takes runs an earlier
    /// process may have published events of, `Resumed`: numbering goes on
    /// past its reservation; later passes take runs nobody opened yet,
    /// `Fresh`), its own that it has not opened (an earlier process with
    /// this node id), and those of nodes judged dead (taken over, `Resumed`).
    async fn rescan(&self, origin: Origin, owners: &mut OwnerWatch) -> Result<(), chorus_store::StoreError> {
        let mut after = None;
        loop {
            if self.0.closing.load(Ordering::Acquire) {
                return Ok(());
            }
            let page = self.0.store.list_runs_with_status(RunStatus::Queued, after.clone(), RESCAN_PAGE).await?;
            let full = page.len() == RESCAN_PAGE as usize;
            after = page.last().map(|r| (r.created_at, r.id.clone()));
            for run in page {
                if self.0.ledger.get(&run.id).is_some() {
                    continue;
                }
                match run.node_id.clone() {
                    None => self.take(run, origin, None).await,
                    Some(owner) if owner == self.node() => self.take(run, Origin::Resumed, None).await,
                    Some(owner) if owners.is_dead(&owner) => {
                        tracing::info!(run_id = %run.id, %owner, "taking over a queued run of a stopped node");
                        self.take(run, Origin::Resumed, Some(&owner)).await;
                    }
                    Some(_) => {}
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// One pass over the store: runs of stopped nodes, then queued runs.
    async fn pass(&self, origin: Origin, owners: &mut OwnerWatch) -> Result<(), chorus_store::StoreError> {
        owners.begin(self.0.hub.live_nodes().await);
        let swept = async {
            self.sweep_interrupted(owners).await?;
            self.rescan(origin, owners).await
        }
        .await;
        owners.finish();
        swept
    }

    fn spawn_background(&self, intake: IntakeReceiver, mut owners: OwnerWatch) {
        let shared = &self.0;
        let stop = shared.stop_background.clone();
        let IntakeReceiver { mut rx, shared: signal } = intake;
        let me = self.clone();
        let rescan_signal = signal.clone();
        shared.background.spawn(async move {
            loop {
                let runs = tokio::select! {
                    _ = stop.cancelled() => return,
                    runs = rx.recv() => match runs { Some(runs) => runs, None => return },
                };
                for run in runs {
                    me.admit(run, Origin::Fresh).await;
                }
            }
        });
        let me = self.clone();
        let stop = shared.stop_background.clone();
        shared.background.spawn(async move {
            let mut tick = tokio::time::interval(me.0.config.rescan_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut origin = Origin::Resumed;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = rescan_signal.wake.notified() => {}
                }
                rescan_signal.rescan.store(false, Ordering::Release);
                let pass = chorus_core::supervise::catch_panic(&me.0.core_metrics, "agent_rescan", me.pass(origin, &mut owners)).await;
                if matches!(pass, Some(Ok(()))) {
                    origin = Origin::Fresh;
                }
                if let Some(Err(e)) = pass {
                    tracing::warn!(error = %e, "rescan for queued runs failed");
                }
            }
        });
        let me = self.clone();
        let stop = shared.stop_background.clone();
        shared.background.spawn(async move {
            let timeout = me.0.config.silence_timeout;
            let mut tick = tokio::time::interval((timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(5)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(deadline) = tokio::time::Instant::now().checked_sub(timeout) else { continue };
                for live in me.0.ledger.silent_since(deadline) {
                    let me = me.clone();
                    let run_id = live.id().to_owned();
                    tracing::warn!(%run_id, ?timeout, "run silent past its deadline; ending it");
                    me.0.runs.clone().spawn(async move {
                        if let Err(e) = me.0.ledger.stop(&run_id, Stop::Timeout, me.0.config.cancel_grace).await {
                            tracing::warn!(%run_id, error = %e, "silent run not ended");
                        }
                    });
                }
            }
        });
    }

    /// Stops taking runs, lets running ones finish within `limit`, then ends
    /// the rest with `shutdown`. Waiting runs stay queued in the store and
    /// resume at the next start.
    pub async fn shutdown(&self, limit: Duration) {
        let shared = &self.0;
        shared.closing.store(true, Ordering::Release);
        let drained = tokio::time::timeout(limit, async {
            loop {
                let finished = shared.finished.notified();
                tokio::pin!(finished);
                finished.as_mut().enable();
                if shared.queues.lock().running() == 0 {
                    return;
                }
                finished.await;
            }
        })
        .await
        .is_ok();
        if !drained {
            let left = shared.ledger.started_runs();
            tracing::warn!(runs = left.len(), "runs still going at the drain limit end with `shutdown`");
            let grace = shared.config.cancel_grace;
            let stops = left.iter().map(|live| shared.ledger.stop(live.id(), Stop::Shutdown, grace));
            for result in futures_util::future::join_all(stops).await {
                if let Err(e) = result {
                    tracing::error!(error = %e, "run not ended at shutdown");
                }
            }
        }
        shared.stop_background.cancel();
        shared.background.close();
        shared.background.wait().await;
        shared.runs.close();
        let _ = tokio::time::timeout(shared.config.cancel_grace * 2, shared.runs.wait()).await;
        shared.tools.shutdown().await;
    }
}

/// What a run refused with `busy` says.
fn busy_message(agent: &chorus_store::Agent) -> String {
    format!("{} is busy in this channel; try again when it has answered", agent.name)
}
