//! The run state machine: one owner for every run's events and ending.
//!
//! Every producer goes through [`RunLedger`]: the hosted run loop, cancel,
//! the silence watchdog, shutdown, the start-up sweep, and (later) agents
//! that run elsewhere and push their events through the publish API.
//!
//! - **Sequence numbers.** Each event of a run gets the next `seq`, from 1.
//!   Numbers are handed out under the run's emission gate and reserved in
//!   blocks in the run row (`seq_reserved`), so after a crash whoever ends
//!   the run takes the reserved high-water mark + 1: still after everything
//!   that may have been published.
//! - **Exactly one ending.** [`RunLedger::end`] is a compare-and-set on the
//!   stored status (the store's `end_run`); the first producer wins, the
//!   others get [`EndOutcome::AlreadyEnded`]. The terminal event (and the
//!   agent's answer) go into the outbox in the same transaction, so a crash
//!   right after the commit still delivers them (the outbox relay).
//! - **Nothing after the ending.** The emission gate orders a run's
//!   publishes on this node; once the ending is published, every later event
//!   is dropped and counted (`chorus_agent_events_dropped`).
//!
//! The gate is an async mutex held across one publish: the only way to keep
//! a terminal event from overtaking an event already being published.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chorus_chat::messages::outbox_event;
use chorus_core::Hub;
use chorus_core::publication::Draft;
use chorus_protocol::{ChannelName, EventType, Payload, RunErrorCode};
use chorus_store::{
    OutboxEvent, Run, RunAnswer, RunEnd, RunEndOutcome, RunEnded, RunStatus, RunTriggers, RunUsage, Store, StoreError,
};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{Ending, RunEvent, RunHeader, terminal_payload};
use crate::metrics::AgentMetrics;
use crate::watch::{ClientTurns, RunFeed, Watchers};

/// Sequence numbers reserved per store write (the store reserves the first
/// block when it creates the run).
pub const SEQ_BLOCK: i64 = chorus_store::RUN_SEQ_BLOCK;
/// Attempts at a durable ending while the store fails, and the first pause.
const END_ATTEMPTS: u32 = 3;
const END_RETRY: Duration = Duration::from_millis(100);

/// Why a producer asks a running run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    Superseded,
    Timeout,
    Shutdown,
}

impl Stop {
    pub fn code(self) -> RunErrorCode {
        match self {
            Stop::Cancelled => RunErrorCode::Cancelled,
            Stop::Superseded => RunErrorCode::Superseded,
            Stop::Timeout => RunErrorCode::Timeout,
            Stop::Shutdown => RunErrorCode::Shutdown,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Stop::Cancelled => "the run was cancelled",
            Stop::Superseded => "a newer message to this agent interrupted the run",
            Stop::Timeout => "the run sent no event within its silence deadline",
            Stop::Shutdown => "the server shut down before the run finished",
        }
    }
}

/// How a run was picked up by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Just created; no event of it was published yet (numbers start at 1).
    Fresh,
    /// Found in the store (after a restart): an earlier process may have
    /// published up to its reserved mark.
    Resumed,
}

struct Emission {
    next_seq: i64,
    reserved: i64,
    ended: bool,
}

/// What a run streamed so far: the answer's message id and text, and the
/// last `seq` handed out when the text was read (the text holds every
/// `agent_text_delta` numbered up to it, and none after).
#[derive(Debug, Clone)]
pub struct Streamed {
    pub message_id: String,
    pub text: String,
    pub seq: i64,
}

/// A run this node produces events for.
pub struct LiveRun {
    run: Run,
    thread: ChannelName,
    thread_id: String,
    gate: tokio::sync::Mutex<Emission>,
    /// Set once the ending is committed; read without the gate.
    ended: AtomicBool,
    /// Set when the run starts executing (the watchdog watches only those).
    started: AtomicBool,
    last_event: Mutex<Instant>,
    started_at: Mutex<Option<Instant>>,
    first_token: AtomicBool,
    /// Tells the producer to stop; `stop_reason` says why (the first reason wins).
    stop: CancellationToken,
    stop_reason: Mutex<Option<Stop>>,
    /// Cancelled once the ending is committed and published.
    done: CancellationToken,
    streamed: Mutex<Streamed>,
    /// Clients watching the run from this node.
    watchers: Watchers,
    /// What the client that asked for the run added to it.
    client: ClientTurns,
}

impl LiveRun {
    pub fn run(&self) -> &Run {
        &self.run
    }

    pub fn id(&self) -> &str {
        &self.run.id
    }

    /// `room:<channel id>`: where the run's events go.
    pub fn thread_id(&self) -> &str {
        &self.thread_id
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Fires when a producer asks the run to stop.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn stop_reason(&self) -> Option<Stop> {
        *self.stop_reason.lock()
    }

    /// Resolves once the run's ending is committed and published.
    pub async fn ended(&self) {
        self.done.cancelled().await
    }

    /// The answer so far.
    pub fn streamed(&self) -> Streamed {
        self.streamed.lock().clone()
    }

    /// The id the answer message will have.
    pub fn message_id(&self) -> String {
        self.streamed.lock().message_id.clone()
    }

    /// Frontend tools and continuation turns of the client that asked for the run.
    pub fn client(&self) -> &ClientTurns {
        &self.client
    }

    /// Watches the run's events from now on; `None` when it has ended or has
    /// enough watchers already.
    pub fn watch(&self) -> Option<RunFeed> {
        self.watchers.add()
    }

    fn request_stop(&self, reason: Stop) {
        let mut current = self.stop_reason.lock();
        if current.is_none() {
            *current = Some(reason);
        }
        drop(current);
        self.stop.cancel();
    }

    fn header(&self, seq: i64) -> RunHeader<'_> {
        RunHeader { run_id: &self.run.id, thread_id: &self.thread_id, agent_id: &self.run.agent_id, seq }
    }
}

/// What an ending did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One value per run ending, never held in bulk.
pub enum EndOutcome {
    /// This call ended the run; the ending and the stored answer are published.
    Ended(Box<RunEnded>),
    /// The run had already ended (or is unknown); nothing was written.
    AlreadyEnded(Option<Run>),
    /// Another node owns the run (it was claimed there after this node
    /// opened it): that node produces its events and ending; nothing was
    /// written, and the run is no longer live here.
    OwnedElsewhere(Run),
}

/// The answer an ending stores (with the runs it triggers, for a completed one).
#[derive(Debug, Clone, Default)]
pub struct AnswerPlan {
    pub triggers: RunTriggers,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the run is not queued (it ended, or runs elsewhere)")]
    NotQueued,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state machine over the store and the hub. Cheap to clone.
#[derive(Clone)]
pub struct RunLedger(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    hub: Hub,
    metrics: AgentMetrics,
    /// Runs this node produces events for. Bounded by the scheduler's caps
    /// (waiting and running runs) plus runs being ended.
    live: Mutex<HashMap<String, Arc<LiveRun>>>,
}

impl RunLedger {
    pub fn new(store: Arc<dyn Store>, hub: Hub, metrics: AgentMetrics) -> Self {
        RunLedger(Arc::new(Inner { store, hub, metrics, live: Mutex::new(HashMap::new()) }))
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.0.metrics
    }

    /// Takes over producing `run`'s events on this node. `None` for a run
    /// that has ended, whose channel name is unusable, or that is live here
    /// already (someone else took it).
    pub fn open(&self, run: Run, origin: Origin) -> Option<Arc<LiveRun>> {
        self.open_for_client(run, origin, ClientTurns::default())
    }

    /// [`RunLedger::open`] with what a client adds to the run.
    pub fn open_for_client(&self, run: Run, origin: Origin, client: ClientTurns) -> Option<Arc<LiveRun>> {
        if !run.status.is_active() {
            return None;
        }
        let thread = ChannelName::from_parts("room", &run.channel_id).ok()?;
        let mut live = self.0.live.lock();
        if live.contains_key(&run.id) {
            return None;
        }
        let next_seq = match origin {
            Origin::Fresh => 1,
            Origin::Resumed => run.seq_reserved + 1,
        };
        let entry = Arc::new(LiveRun {
            thread_id: thread.to_string(),
            thread,
            gate: tokio::sync::Mutex::new(Emission { next_seq, reserved: run.seq_reserved, ended: false }),
            ended: AtomicBool::new(false),
            started: AtomicBool::new(run.status == RunStatus::Running),
            last_event: Mutex::new(Instant::now()),
            started_at: Mutex::new(None),
            first_token: AtomicBool::new(false),
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            done: CancellationToken::new(),
            streamed: Mutex::new(Streamed { message_id: uuid::Uuid::now_v7().to_string(), text: String::new(), seq: next_seq - 1 }),
            watchers: Watchers::default(),
            client,
            run,
        });
        live.insert(entry.run.id.clone(), entry.clone());
        Some(entry)
    }

    /// Drops a run opened here that nothing was published for (it stays
    /// queued in the store; a later rescan, here or on another node, takes
    /// it again). Its watchers' feeds end, marked as moved: this node
    /// will not produce the run's events.
    pub fn forget(&self, run_id: &str) {
        let removed = self.0.live.lock().remove(run_id);
        if let Some(live) = removed {
            live.watchers.close_moved();
        }
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        self.0.live.lock().get(run_id).cloned()
    }

    /// Runs live here.
    pub fn live_count(&self) -> usize {
        self.0.live.lock().len()
    }

    /// Started runs with no event since `deadline` (the silence watchdog's prey).
    pub fn silent_since(&self, deadline: Instant) -> Vec<Arc<LiveRun>> {
        self.0
            .live
            .lock()
            .values()
            .filter(|r| r.is_started() && !r.is_ended() && *r.last_event.lock() <= deadline)
            .cloned()
            .collect()
    }

    /// Started runs not yet ended (shutdown ends them).
    pub fn started_runs(&self) -> Vec<Arc<LiveRun>> {
        self.0.live.lock().values().filter(|r| r.is_started() && !r.is_ended()).cloned().collect()
    }

    /// Publishes one event of `live`, with the next `seq`. Returns false when
    /// it was dropped because the run has ended.
    pub async fn emit(&self, live: &LiveRun, event: RunEvent) -> bool {
        let mut gate = live.gate.lock().await;
        self.emit_locked(live, &mut gate, event).await
    }

    async fn emit_locked(&self, live: &LiveRun, gate: &mut Emission, event: RunEvent) -> bool {
        if gate.ended {
            self.0.metrics.event_dropped();
            tracing::debug!(run_id = %live.run.id, event = event.event_type().as_str(), "event after the ending dropped");
            return false;
        }
        if gate.next_seq > gate.reserved {
            let needed = gate.next_seq - gate.reserved - 1 + SEQ_BLOCK;
            match self.0.store.reserve_run_seq(&live.run.id, self.0.hub.node().as_str(), needed).await {
                Ok(Some(high)) => gate.reserved = high,
                Ok(None) => {
                    // Ended in the store by a producer elsewhere, or taken over by
                    // another node: nothing more of it goes out from here.
                    gate.ended = true;
                    live.ended.store(true, Ordering::Release);
                    self.0.metrics.event_dropped();
                    return false;
                }
                // Published anyway: without the store the run cannot end durably
                // either, and its next reservation covers what was handed out.
                Err(e) => tracing::warn!(run_id = %live.run.id, error = %e, "sequence numbers not reserved"),
            }
        }
        let seq = gate.next_seq;
        gate.next_seq += 1;
        {
            // Text and number change together: a reader sees both or neither.
            let mut streamed = live.streamed.lock();
            if let RunEvent::TextDelta { delta, .. } = &event {
                streamed.text.push_str(delta);
            }
            streamed.seq = seq;
        }
        if matches!(event, RunEvent::TextDelta { .. } | RunEvent::Thinking { .. })
            && !live.first_token.swap(true, Ordering::AcqRel)
            && let Some(started) = *live.started_at.lock()
        {
            self.0.metrics.first_token(started.elapsed());
        }
        let payload = event.payload(live.header(seq));
        self.publish(&live.thread, event.event_type(), payload.clone(), &live.run.id).await;
        live.watchers.send(event.event_type(), &payload);
        *live.last_event.lock() = Instant::now();
        true
    }

    async fn publish(&self, thread: &ChannelName, event: EventType, payload: Payload, run_id: &str) -> bool {
        match self.0.hub.publish(thread, Draft::new(event, payload)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%run_id, error = %e, event = event.as_str(), "run event not published");
                false
            }
        }
    }

    /// Marks `live` running in the store (compare-and-set from `queued`)
    /// and publishes `agent_started`.
    pub async fn start(&self, live: &LiveRun, provider: &str, model: &str) -> Result<Run, LedgerError> {
        let mut gate = live.gate.lock().await;
        if gate.ended {
            return Err(LedgerError::NotQueued);
        }
        let reserve = if gate.next_seq > gate.reserved { gate.next_seq - gate.reserved - 1 + SEQ_BLOCK } else { 0 };
        let node = self.0.hub.node().as_str();
        let Some(run) = self.0.store.start_run(&live.run.id, node, provider, model, reserve).await? else {
            // Ended by another producer, or taken over by another node: not
            // live here any more (its events and ending are that producer's).
            gate.ended = true;
            live.ended.store(true, Ordering::Release);
            drop(gate);
            live.watchers.close_moved();
            if let Some(live) = self.get(&live.run.id) {
                self.retire(&live);
            }
            return Err(LedgerError::NotQueued);
        };
        gate.reserved = run.seq_reserved;
        *live.started_at.lock() = Some(Instant::now());
        live.started.store(true, Ordering::Release);
        let event = RunEvent::Started {
            model: model.to_owned(),
            provider: provider.to_owned(),
            trigger_message_id: run.trigger_message_id.clone(),
            triggered_by: run.triggered_by.clone(),
            parent_run_id: run.parent_run_id.clone(),
            hop: run.hop,
        };
        self.emit_locked(live, &mut gate, event).await;
        Ok(run)
    }

    /// Asks a live run to stop, waits up to `grace` for its producer to end
    /// it (keeping what it streamed), then ends it here if it has not.
    pub async fn stop(&self, run_id: &str, reason: Stop, grace: Duration) -> Result<EndOutcome, StoreError> {
        if let Some(live) = self.get(run_id) {
            live.request_stop(reason);
            if live.is_started() && tokio::time::timeout(grace, live.ended()).await.is_ok() {
                return Ok(EndOutcome::AlreadyEnded(None));
            }
        }
        self.end(run_id, Ending::failed(reason.code(), reason.message()), AnswerPlan::default()).await
    }

    /// Ends a run, once: the compare-and-set on its stored status, with the
    /// answer and the terminal event committed together, then published.
    /// A completed ending stores `answer`'s triggers with the answer; any
    /// other keeps what was streamed (when there was some) as the answer.
    /// Store failures are retried a few times; if the store stays down the
    /// run stays live here (the watchdog tries again later).
    pub async fn end(&self, run_id: &str, ending: Ending, answer: AnswerPlan) -> Result<EndOutcome, StoreError> {
        let Some(live) = self.get(run_id) else {
            return self.end_stored(run_id, ending, None).await;
        };
        let mut gate = live.gate.lock().await;
        if gate.ended {
            return Ok(EndOutcome::AlreadyEnded(None));
        }
        let streamed = live.streamed();
        let stored_answer = match &ending {
            Ending::Completed { text, .. } if !text.is_empty() => {
                Some(RunAnswer { message_id: streamed.message_id.clone(), text: text.clone(), triggers: answer.triggers })
            }
            Ending::Failed { .. } if !streamed.text.is_empty() => Some(RunAnswer {
                message_id: streamed.message_id.clone(),
                text: streamed.text.clone(),
                triggers: RunTriggers::none(),
            }),
            _ => None,
        };
        // Every number up to `next_seq` was handed out through this gate.
        // Guarded by this node: a run claimed elsewhere after it was opened
        // here is that node's to end (its events may be numbered already).
        let ender = Some(self.0.hub.node().as_str());
        let outcome =
            self.commit_end(&live.run, &live.thread_id, ending, stored_answer, Ender { seq: Some(gate.next_seq), watchers: Some(&live.watchers), node: ender }).await;
        match outcome {
            Ok(EndOutcome::Ended(ended)) => {
                gate.ended = true;
                live.ended.store(true, Ordering::Release);
                let started = *live.started_at.lock();
                self.0.metrics.run_ended(ended.run.status.as_str(), ended.run.error_code.as_deref().unwrap_or("completed"), started.map(|s| s.elapsed()));
                drop(gate);
                self.retire(&live);
                Ok(EndOutcome::Ended(ended))
            }
            Ok(EndOutcome::AlreadyEnded(run)) => {
                gate.ended = true;
                live.ended.store(true, Ordering::Release);
                drop(gate);
                self.retire(&live);
                Ok(EndOutcome::AlreadyEnded(run))
            }
            Ok(EndOutcome::OwnedElsewhere(run)) => {
                tracing::info!(run_id = %run.id, owner = run.node_id.as_deref().unwrap_or("-"), "run claimed by another node; left to it");
                gate.ended = true;
                live.ended.store(true, Ordering::Release);
                drop(gate);
                live.watchers.close_moved();
                self.retire(&live);
                Ok(EndOutcome::OwnedElsewhere(run))
            }
            Err(e) => Err(e),
        }
    }

    /// Ends a run this node does not produce, unless another node owns it
    /// ([`EndOutcome::OwnedElsewhere`]): for a run nobody owns yet, so that
    /// a claim racing the ending leaves exactly one producer.
    pub async fn end_unowned(&self, run_id: &str, ending: Ending) -> Result<EndOutcome, StoreError> {
        if self.get(run_id).is_some() {
            return self.end(run_id, ending, AnswerPlan::default()).await;
        }
        self.end_stored(run_id, ending, Some(self.0.hub.node().as_str())).await
    }

    /// Ends a run this node does not produce (found in the store), whoever
    /// owns it, or (`ender`) unless another node does: its terminal event
    /// takes the reserved high-water mark + 1.
    async fn end_stored(&self, run_id: &str, ending: Ending, ender: Option<&str>) -> Result<EndOutcome, StoreError> {
        let Some(run) = self.0.store.get_run(run_id).await? else {
            return Ok(EndOutcome::AlreadyEnded(None));
        };
        if !run.status.is_active() {
            return Ok(EndOutcome::AlreadyEnded(Some(run)));
        }
        let thread_id = format!("room:{}", run.channel_id);
        let outcome = self.commit_end(&run, &thread_id, ending, None, Ender { seq: None, watchers: None, node: ender }).await?;
        if let EndOutcome::Ended(ended) = &outcome {
            self.0.metrics.run_ended(ended.run.status.as_str(), ended.run.error_code.as_deref().unwrap_or("completed"), None);
        }
        Ok(outcome)
    }

    async fn commit_end(
        &self,
        run: &Run,
        thread_id: &str,
        ending: Ending,
        answer: Option<RunAnswer>,
        by: Ender<'_>,
    ) -> Result<EndOutcome, StoreError> {
        let Ender { seq, watchers, node: ender } = by;
        let (status, error_code, error_message) = match &ending {
            Ending::Completed { .. } => (RunStatus::Completed, None, None),
            Ending::Failed { code, message, .. } => {
                let status = match code.outcome() {
                    chorus_protocol::RunOutcome::Cancelled => RunStatus::Cancelled,
                    _ => RunStatus::Failed,
                };
                (status, Some(code.as_str().to_owned()), Some(message.clone()))
            }
        };
        let usage = match &ending {
            Ending::Completed { usage, cost_usd, .. } => Some((to_run_usage(usage), *cost_usd)),
            Ending::Failed { usage: Some(usage), cost_usd, .. } => Some((to_run_usage(usage), cost_usd.unwrap_or(0.0))),
            Ending::Failed { .. } => None,
        };
        let built: Mutex<Vec<OutboxEvent>> = Mutex::new(Vec::new());
        let builder = |ended: &chorus_store::EndedRun<'_>| {
            let mut events = Vec::with_capacity(2);
            if let Some(message) = ended.message {
                events.push(outbox_event(message, EventType::MessageCreated, None));
            }
            let header = RunHeader { run_id: &ended.run.id, thread_id, agent_id: &ended.run.agent_id, seq: ended.seq };
            let answer = ended.message.map(|m| (m.id.as_str(), m.text.as_str()));
            let (event_type, payload) = terminal_payload(header, &ending, answer);
            events.push(OutboxEvent {
                channel: thread_id.to_owned(),
                event_type: event_type.as_str().to_owned(),
                payload: String::from_utf8_lossy(payload.as_bytes()).into_owned(),
            });
            *built.lock() = events.clone();
            events
        };
        let mut attempt = 0;
        let outcome = loop {
            let end = RunEnd {
                run_id: run.id.clone(),
                status,
                error_code: error_code.clone(),
                error_message: error_message.clone(),
                usage,
                seq,
                answer: answer.clone(),
                ender: ender.map(str::to_owned),
            };
            match self.0.store.end_run(end, &builder).await {
                Ok(outcome) => break outcome,
                Err(e) if e.is_transient() && attempt + 1 < END_ATTEMPTS => {
                    tracing::warn!(run_id = %run.id, error = %e, "run ending not committed; retrying");
                    tokio::time::sleep(END_RETRY * 4u32.pow(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(run_id = %run.id, error = %e, "run ending not committed");
                    return Err(e);
                }
            }
        };
        match outcome {
            RunEndOutcome::AlreadyEnded(run) => Ok(EndOutcome::AlreadyEnded(run)),
            RunEndOutcome::OwnedElsewhere(run) => Ok(EndOutcome::OwnedElsewhere(run)),
            RunEndOutcome::Ended(ended) => {
                let events = std::mem::take(&mut *built.lock());
                tracing::info!(run_id = %ended.run.id, status = %ended.run.status, code = ended.run.error_code.as_deref().unwrap_or("-"), seq = ended.seq, "run ended");
                self.publish_committed(&events, &ended.outbox_ids, &run.id).await;
                // The terminal event is the last row; watchers get it even if the relay publishes it.
                if let (Some(watchers), Some(last)) = (watchers, events.last())
                    && let (Some(event), Ok(data)) =
                        (EventType::parse(&last.event_type), Payload::from_bytes(Bytes::from(last.payload.clone())))
                {
                    watchers.send(event, &data);
                }
                Ok(EndOutcome::Ended(Box::new(ended)))
            }
        }
    }

    /// Publishes the outbox rows of an ending, in order, and deletes them; a
    /// row whose publish fails stays for the relay (with every later one).
    async fn publish_committed(&self, events: &[OutboxEvent], ids: &[i64], run_id: &str) {
        let mut delivered = Vec::with_capacity(ids.len());
        for (event, id) in events.iter().zip(ids) {
            let (Ok(channel), Some(event_type), Ok(payload)) = (
                ChannelName::parse(&event.channel),
                EventType::parse(&event.event_type),
                Payload::from_bytes(Bytes::from(event.payload.clone())),
            ) else {
                tracing::error!(%run_id, event = %event.event_type, "ending event is unusable; left to the relay");
                break;
            };
            if !self.publish(&channel, event_type, payload, run_id).await {
                break;
            }
            delivered.push(*id);
        }
        if !delivered.is_empty()
            && let Err(e) = self.0.store.delete_outbox(&delivered).await
        {
            tracing::warn!(%run_id, error = %e, "ending's outbox rows not deleted; the relay may publish them again");
        }
    }

    fn retire(&self, live: &Arc<LiveRun>) {
        live.watchers.close();
        live.stop.cancel();
        live.done.cancel();
        self.0.live.lock().remove(&live.run.id);
    }
}

/// Who commits an ending: the terminal event's `seq` (`None`: the reserved
/// mark + 1), the watchers that get it, and the node it is guarded by.
struct Ender<'a> {
    seq: Option<i64>,
    watchers: Option<&'a Watchers>,
    node: Option<&'a str>,
}

fn to_run_usage(usage: &crate::events::UsageView) -> RunUsage {
    RunUsage { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, estimated: usage.estimated }
}
