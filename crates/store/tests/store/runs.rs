//! Agent runs: created with their message, started and ended by
//! compare-and-set, the answer stored with the ending, usage and summaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chorus_store::*;

use crate::common::*;

both_engines!(
    runs_commit_with_their_message,
    the_channel_run_rate_is_checked_in_the_transaction,
    start_and_end_are_compare_and_set,
    an_answer_is_stored_with_the_ending_and_triggers_runs,
    concurrent_endings_have_one_winner,
    claims_give_each_run_one_owner_within_the_per_user_limit,
    an_agent_and_channel_pair_has_one_owning_node_at_a_time,
    usage_adds_up_per_person_and_day,
    summaries_never_move_backwards,
);

fn trigger(agent: &Agent, user: &User) -> RunTrigger {
    RunTrigger { agent_id: agent.id.clone(), triggered_by: Some(user.id.clone()), parent_run_id: None, hop: 0 }
}

async fn send_with(t: &Ctx, channel: &Channel, author: &User, text: &str, triggers: &RunTriggers) -> MessageWrite {
    let new = NewMessage { channel_id: channel.id.clone(), author: MemberRef::user(&author.id), text: text.into() };
    match t.store.insert_message_with_runs(new, None, &created_event, triggers).await.expect("insert") {
        InsertOutcome::Inserted(w) => w,
        InsertOutcome::Duplicate(m) => panic!("duplicate {m:?}"),
    }
}

/// Ends `run` with `status`; the builder records a terminal event naming the seq.
fn ending(run: &Run, status: RunStatus, seq: Option<i64>) -> RunEnd {
    RunEnd {
        run_id: run.id.clone(),
        status,
        error_code: (status != RunStatus::Completed).then(|| "cancelled".to_owned()),
        error_message: None,
        usage: None,
        seq,
        answer: None,
        ender: None,
    }
}

fn terminal(ended: &EndedRun<'_>) -> Vec<OutboxEvent> {
    let mut events = Vec::new();
    if let Some(m) = ended.message {
        events.push(created_event(m));
    }
    events.push(OutboxEvent {
        channel: format!("room:{}", ended.run.channel_id),
        event_type: "agent_error".into(),
        payload: format!(r#"{{"run_id":"{}","seq":{}}}"#, ended.run.id, ended.seq),
    });
    events
}

async fn runs_commit_with_their_message(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let (a, b) = (t.agent(&alice, "Ann").await, t.agent(&alice, "Bob").await);
    let triggers = RunTriggers { runs: vec![trigger(&a, &alice), trigger(&b, &alice)], channel_runs_per_minute: 0 };
    let w = send_with(&t, &c, &alice, "@Ann @Bob hi", &triggers).await;
    assert_eq!(w.runs.len(), 2);
    assert!(w.limited.is_empty());
    for (run, agent) in w.runs.iter().zip([&a, &b]) {
        assert_eq!(run.agent_id, agent.id);
        assert_eq!((run.status, run.hop, run.seq_reserved), (RunStatus::Queued, 0, RUN_SEQ_BLOCK));
        assert_eq!(run.trigger_message_id.as_deref(), Some(w.message.id.as_str()));
        assert_eq!(run.triggered_by.as_deref(), Some(alice.id.as_str()));
        assert_eq!(t.store.get_run(&run.id).await.unwrap().as_ref(), Some(run));
    }
    let active = t.store.list_channel_runs(&c.id, RunFilter::Active, 10).await.unwrap();
    assert_eq!(active.iter().map(|r| &r.id).collect::<Vec<_>>(), w.runs.iter().map(|r| &r.id).collect::<Vec<_>>());
    // Keyset pages over the queued runs.
    let first = t.store.list_runs_with_status(RunStatus::Queued, None, 1).await.unwrap();
    let last = first.last().map(|r| (r.created_at, r.id.clone()));
    let second = t.store.list_runs_with_status(RunStatus::Queued, last.clone(), 10).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].id, second[0].id);
    assert!(t.store.list_runs_with_status(RunStatus::Running, None, 10).await.unwrap().is_empty());
    // A run started without a message; an unknown channel is refused.
    let explicit = t
        .store
        .create_run(NewRun {
            agent_id: a.id.clone(),
            channel_id: c.id.clone(),
            trigger_message_id: None,
            triggered_by: Some(alice.id.clone()),
            parent_run_id: None,
            hop: 0,
        })
        .await
        .unwrap();
    assert_eq!(explicit.status, RunStatus::Queued);
    let ghost = NewRun {
        agent_id: a.id.clone(),
        channel_id: "nope".into(),
        trigger_message_id: None,
        triggered_by: None,
        parent_run_id: None,
        hop: 0,
    };
    assert_eq!(t.store.create_run(ghost).await, Err(StoreError::NotFound));
    let all = t.store.list_channel_runs(&c.id, RunFilter::All { before: None }, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, explicit.id, "newest first");
    // Deleting the channel deletes its runs.
    t.store.delete_channel(&c.id).await.unwrap();
    assert_eq!(t.store.get_run(&explicit.id).await.unwrap(), None);
}

async fn the_channel_run_rate_is_checked_in_the_transaction(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let (a, b) = (t.agent(&alice, "Ann").await, t.agent(&alice, "Bob").await);
    let both = RunTriggers { runs: vec![trigger(&a, &alice), trigger(&b, &alice)], channel_runs_per_minute: 3 };
    let w = send_with(&t, &c, &alice, "one", &both).await;
    assert_eq!((w.runs.len(), w.limited.len()), (2, 0));
    t.clock.advance(std::time::Duration::from_millis(30_000));
    let w = send_with(&t, &c, &alice, "two", &both).await;
    assert_eq!(w.runs.len(), 1);
    assert_eq!(w.limited, vec![b.id.clone()], "the trigger past the rate creates no run");
    // Another channel has its own count.
    let other = t.channel(&alice, "other").await;
    assert_eq!(send_with(&t, &other, &alice, "x", &both).await.runs.len(), 2);
    // A minute after the first runs, room again.
    t.clock.advance(std::time::Duration::from_millis(31_000));
    assert_eq!(send_with(&t, &c, &alice, "three", &both).await.runs.len(), 2);
    assert_eq!(t.store.list_channel_runs(&c.id, RunFilter::All { before: None }, 100).await.unwrap().len(), 5);
}

async fn start_and_end_are_compare_and_set(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let a = t.agent(&alice, "Ann").await;
    let triggers = RunTriggers { runs: vec![trigger(&a, &alice), trigger(&a, &alice)], channel_runs_per_minute: 0 };
    let w = send_with(&t, &c, &alice, "go", &triggers).await;
    let (run, other) = (&w.runs[0], &w.runs[1]);

    // Only the node that claimed it starts it; numbers go to the owner (or to nobody's run).
    assert_eq!(t.store.reserve_run_seq(&run.id, "n2", 0).await.unwrap(), Some(RUN_SEQ_BLOCK));
    assert_eq!(t.store.start_run(&run.id, "n1", "demo", "demo", 0).await.unwrap(), None, "not claimed");
    assert!(matches!(t.store.claim_run(claim(run, "n1", None, 10)).await.unwrap(), RunClaim::Claimed(_)));
    assert_eq!(t.store.start_run(&run.id, "n2", "demo", "demo", 0).await.unwrap(), None, "another node's");
    assert_eq!(t.store.reserve_run_seq(&run.id, "n2", 64).await.unwrap(), None, "another node's");
    let started = t.store.start_run(&run.id, "n1", "demo", "demo", 0).await.unwrap().expect("started");
    assert_eq!((started.status, started.provider.as_deref(), started.model.as_deref()), (RunStatus::Running, Some("demo"), Some("demo")));
    assert!(started.started_at.is_some());
    assert_eq!(t.store.start_run(&run.id, "n1", "demo", "demo", 0).await.unwrap(), None, "only a queued run starts");
    assert_eq!(t.store.reserve_run_seq(&run.id, "n1", 64).await.unwrap(), Some(128));
    assert!(t.store.record_run_usage(&run.id, RunUsage { input_tokens: 10, output_tokens: 2, estimated: true }, 0.5).await.unwrap());

    // The live producer ends it with its own next number.
    let RunEndOutcome::Ended(ended) = t.store.end_run(ending(run, RunStatus::Cancelled, Some(7)), &terminal).await.unwrap() else {
        panic!("ended")
    };
    assert_eq!((ended.seq, ended.run.status, ended.run.seq_reserved), (7, RunStatus::Cancelled, 128));
    assert_eq!(ended.run.usage, RunUsage { input_tokens: 10, output_tokens: 2, estimated: true }, "recorded usage kept");
    assert_eq!(ended.run.error_code.as_deref(), Some("cancelled"));
    assert!(ended.run.ended_at.is_some());
    assert_eq!(ended.outbox_ids.len(), 1);
    let outbox = t.store.pending_outbox(10).await.unwrap();
    let row = outbox.iter().find(|r| r.id == ended.outbox_ids[0]).expect("terminal committed with the ending");
    assert_eq!(row.payload, format!(r#"{{"run_id":"{}","seq":7}}"#, run.id));
    assert_eq!(t.store.get_run(&run.id).await.unwrap(), Some(ended.run.clone()));

    // Every later producer loses, and writes nothing.
    let again = t.store.end_run(ending(run, RunStatus::Failed, None), &terminal).await.unwrap();
    assert_eq!(again, RunEndOutcome::AlreadyEnded(Some(ended.run.clone())));
    assert_eq!(t.store.pending_outbox(10).await.unwrap().len(), outbox.len());
    assert_eq!(t.store.reserve_run_seq(&run.id, "n1", 64).await.unwrap(), None);
    assert!(!t.store.record_run_usage(&run.id, RunUsage::default(), 0.0).await.unwrap());
    assert_eq!(t.store.start_run(&run.id, "n1", "demo", "demo", 0).await.unwrap(), None);

    // Another producer (no numbers of its own) takes the high-water mark + 1.
    let RunEndOutcome::Ended(other_end) = t.store.end_run(ending(other, RunStatus::Failed, None), &terminal).await.unwrap() else {
        panic!("ended")
    };
    assert_eq!((other_end.seq, other_end.run.seq_reserved), (RUN_SEQ_BLOCK + 1, RUN_SEQ_BLOCK + 1));
    assert_eq!(t.store.end_run(ending(run, RunStatus::Failed, None), &terminal).await.unwrap(), RunEndOutcome::AlreadyEnded(Some(ended.run)));
    let missing = RunEnd { run_id: "missing".into(), ..ending(other, RunStatus::Failed, None) };
    assert_eq!(t.store.end_run(missing, &terminal).await.unwrap(), RunEndOutcome::AlreadyEnded(None));
    assert!(t.store.end_run(ending(other, RunStatus::Running, None), &terminal).await.is_err(), "not a terminal status");
}

async fn an_answer_is_stored_with_the_ending_and_triggers_runs(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let (a, b) = (t.agent(&alice, "Ann").await, t.agent(&alice, "Bob").await);
    let w = send_with(&t, &c, &alice, "@Ann", &RunTriggers { runs: vec![trigger(&a, &alice)], channel_runs_per_minute: 0 }).await;
    let run = &w.runs[0];
    let answer = RunAnswer {
        message_id: "0193aaaa-0000-7000-8000-000000000001".into(),
        text: "Hi! @Bob, over to you".into(),
        triggers: RunTriggers {
            runs: vec![RunTrigger { agent_id: b.id.clone(), triggered_by: Some(alice.id.clone()), parent_run_id: Some(run.id.clone()), hop: 1 }],
            channel_runs_per_minute: 20,
        },
    };
    let end = RunEnd {
        usage: Some((RunUsage { input_tokens: 5, output_tokens: 3, estimated: false }, 0.25)),
        answer: Some(answer.clone()),
        ..ending(run, RunStatus::Completed, Some(4))
    };
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let builder = move |e: &EndedRun<'_>| {
        counted.store(e.runs.len(), Ordering::SeqCst);
        terminal(e)
    };
    let RunEndOutcome::Ended(ended) = t.store.end_run(end, &builder).await.unwrap() else { panic!("ended") };
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the builder sees the runs the answer triggered");
    let message = ended.message.clone().expect("answer stored");
    assert_eq!((message.id.as_str(), message.text.as_str()), (answer.message_id.as_str(), answer.text.as_str()));
    assert_eq!(message.author, MemberRef::agent(&a.id));
    assert_eq!(message.run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(message.seq, w.message.seq + 1);
    assert_eq!(ended.run.answer_message_id.as_deref(), Some(message.id.as_str()));
    assert_eq!((ended.run.usage.input_tokens, ended.run.cost_usd), (5, 0.25));
    assert_eq!(ended.outbox_ids.len(), 2, "message_created, then the terminal event");
    assert_eq!(t.store.get_message(&message.id).await.unwrap(), Some(message.clone()));
    let chained = &ended.runs[0];
    assert_eq!((chained.agent_id.as_str(), chained.hop), (b.id.as_str(), 1));
    assert_eq!(chained.parent_run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(chained.trigger_message_id.as_deref(), Some(message.id.as_str()));

    // An archived channel takes no answer, and the run still ends.
    t.store.set_channel_archived(&c.id, true).await.unwrap();
    let end = RunEnd { answer: Some(RunAnswer { message_id: "0193aaaa-0000-7000-8000-000000000002".into(), ..answer }), ..ending(chained, RunStatus::Completed, None) };
    let RunEndOutcome::Ended(ended) = t.store.end_run(end, &terminal).await.unwrap() else { panic!("ended") };
    assert_eq!((ended.message, ended.runs.len(), ended.outbox_ids.len()), (None, 0, 1));
    assert_eq!(ended.run.status, RunStatus::Completed);
}

async fn concurrent_endings_have_one_winner(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let a = t.agent(&alice, "Ann").await;
    for round in 0..5 {
        let w = send_with(&t, &c, &alice, &format!("r{round}"), &RunTriggers { runs: vec![trigger(&a, &alice)], channel_runs_per_minute: 0 }).await;
        let run = w.runs[0].clone();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = t.store.clone();
            let run = run.clone();
            let status = if i % 2 == 0 { RunStatus::Cancelled } else { RunStatus::Failed };
            tasks.push(tokio::spawn(async move { store.end_run(ending(&run, status, None), &terminal).await }));
        }
        let mut winners = 0;
        for task in tasks {
            if let RunEndOutcome::Ended(_) = task.await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let rows = t.store.pending_outbox(100).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.event_type == "agent_error").count(), 5, "one terminal event per run");
}

fn claim<'a>(run: &'a Run, node: &'a str, dead_owner: Option<&'a str>, limit: u32) -> RunClaimRequest<'a> {
    RunClaimRequest { run_id: &run.id, node, dead_owner, runs_per_user: limit }
}

async fn claims_give_each_run_one_owner_within_the_per_user_limit(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    // One agent per run: runs of one agent in one channel go to one node (see below).
    let mut runs = Vec::new();
    for i in 0..6 {
        let a = t.agent(&alice, &format!("Ann{i}")).await;
        let one = RunTriggers { runs: vec![trigger(&a, &alice)], channel_runs_per_minute: 0 };
        runs.push(send_with(&t, &c, &alice, &format!("m{i}"), &one).await.runs[0].clone());
    }
    // One owner: the first claim wins, the owner's repeat is idempotent, another node's is refused.
    let RunClaim::Claimed(owned) = t.store.claim_run(claim(&runs[0], "n1", None, 3)).await.unwrap() else { panic!("claimed") };
    assert_eq!(owned.node_id.as_deref(), Some("n1"));
    assert_eq!(t.store.get_run(&runs[0].id).await.unwrap().unwrap().node_id.as_deref(), Some("n1"));
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n1", None, 3)).await.unwrap(), RunClaim::Claimed(_)));
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n2", None, 3)).await.unwrap(), RunClaim::Taken(Some(_))));
    // A node taking over from an owner it saw dead must name that owner.
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n2", Some("n9"), 3)).await.unwrap(), RunClaim::Taken(Some(_))));
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n2", Some("n1"), 3)).await.unwrap(), RunClaim::Claimed(_)));
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n1", None, 3)).await.unwrap(), RunClaim::Taken(Some(_))));

    // Five unclaimed runs of one person, claimed at once from two nodes under
    // a limit of 3 (one is held already): exactly two more are taken.
    let mut tasks = Vec::new();
    for (i, run) in runs[1..].iter().enumerate() {
        let (store, run) = (t.store.clone(), run.clone());
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        tasks.push(tokio::spawn(async move { store.claim_run(claim(&run, node, None, 3)).await }));
    }
    let mut claimed = Vec::new();
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            RunClaim::Claimed(r) => claimed.push(r),
            RunClaim::UserFull(_) => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((claimed.len(), full), (2, 3));
    // An ended run frees its place; unknown and ended runs are not claimable.
    t.store.end_run(ending(&claimed[0], RunStatus::Cancelled, None), &terminal).await.unwrap();
    let waiting: Vec<&Run> = runs[1..].iter().filter(|r| !claimed.iter().any(|c| c.id == r.id)).collect();
    assert!(matches!(t.store.claim_run(claim(waiting[0], "n2", None, 3)).await.unwrap(), RunClaim::Claimed(_)));
    assert!(matches!(t.store.claim_run(claim(waiting[1], "n2", None, 3)).await.unwrap(), RunClaim::UserFull(_)));
    assert!(matches!(t.store.claim_run(claim(&claimed[0], "n1", None, 3)).await.unwrap(), RunClaim::Taken(Some(_))));
    let ghost = Run { id: "no-such-run".into(), ..claimed[0].clone() };
    assert!(matches!(t.store.claim_run(claim(&ghost, "n1", None, 3)).await.unwrap(), RunClaim::Taken(None)));
}

async fn usage_adds_up_per_person_and_day(t: Ctx) {
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let c = t.channel(&alice, "general").await;
    let a = t.agent(&alice, "Ann").await;
    let spend = |user: &User, cost: f64| {
        let t = t.clone();
        let (user, a, c) = (user.clone(), a.clone(), c.clone());
        async move {
            let w = send_with(&t, &c, &user, "x", &RunTriggers { runs: vec![trigger(&a, &user)], channel_runs_per_minute: 0 }).await;
            assert!(t.store.record_run_usage(&w.runs[0].id, RunUsage { input_tokens: 1, output_tokens: 1, estimated: false }, cost).await.unwrap());
        }
    };
    spend(&alice, 0.25).await;
    spend(&alice, 0.5).await;
    spend(&bob, 2.0).await;
    assert_eq!(t.store.user_run_cost_since(&alice.id, T0).await.unwrap(), 0.75);
    assert_eq!(t.store.user_run_cost_since(&bob.id, T0).await.unwrap(), 2.0);
    assert_eq!(t.store.user_run_cost_since("nobody", T0).await.unwrap(), 0.0);
    t.clock.advance(std::time::Duration::from_millis((24 * HOUR) as u64));
    spend(&alice, 0.125).await;
    assert_eq!(t.store.user_run_cost_since(&alice.id, T0 + 24 * HOUR).await.unwrap(), 0.125, "a new day");
}

async fn summaries_never_move_backwards(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    let a = t.agent(&alice, "Ann").await;
    assert_eq!(t.store.get_agent_summary(&a.id, &c.id).await.unwrap(), None);
    let summary = |text: &str, last_seq: i64| AgentSummary {
        agent_id: a.id.clone(),
        channel_id: c.id.clone(),
        summary: text.into(),
        last_seq,
        last_message_id: format!("m{last_seq}"),
        updated_at: 0,
    };
    t.store.put_agent_summary(&summary("up to 10", 10)).await.unwrap();
    t.store.put_agent_summary(&summary("up to 20", 20)).await.unwrap();
    t.store.put_agent_summary(&summary("stale", 15)).await.unwrap();
    let stored = t.store.get_agent_summary(&a.id, &c.id).await.unwrap().unwrap();
    assert_eq!((stored.summary.as_str(), stored.last_seq, stored.last_message_id.as_str()), ("up to 20", 20, "m20"));
    assert_eq!(stored.updated_at, T0);
    let ghost = AgentSummary { agent_id: "ghost".into(), ..summary("x", 1) };
    assert_eq!(t.store.put_agent_summary(&ghost).await, Err(StoreError::NotFound));
    t.store.delete_agent(&a.id).await.unwrap();
    assert_eq!(t.store.get_agent_summary(&a.id, &c.id).await.unwrap(), None, "gone with its agent");
}

async fn an_agent_and_channel_pair_has_one_owning_node_at_a_time(t: Ctx) {
    let alice = t.user("alice").await;
    let (c, d) = (t.channel(&alice, "general").await, t.channel(&alice, "other").await);
    let a = t.agent(&alice, "Ann").await;
    let one = RunTriggers { runs: vec![trigger(&a, &alice)], channel_runs_per_minute: 0 };
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(send_with(&t, &c, &alice, &format!("m{i}"), &one).await.runs[0].clone());
    }
    let in_d = send_with(&t, &d, &alice, "elsewhere", &one).await.runs[0].clone();
    assert!(matches!(t.store.claim_run(claim(&runs[0], "n1", None, 10)).await.unwrap(), RunClaim::Claimed(_)));
    // Another node may not take a second run of the pair; nothing is written.
    match t.store.claim_run(claim(&runs[1], "n2", None, 10)).await.unwrap() {
        RunClaim::Busy { run, owner } => assert_eq!((run.id.as_str(), owner.as_str()), (runs[1].id.as_str(), "n1")),
        other => panic!("expected busy, got {other:?}"),
    }
    assert_eq!(t.store.get_run(&runs[1].id).await.unwrap().unwrap().node_id, None);
    // The owning node may; another channel is another pair.
    assert!(matches!(t.store.claim_run(claim(&runs[1], "n1", None, 10)).await.unwrap(), RunClaim::Claimed(_)));
    assert!(matches!(t.store.claim_run(claim(&in_d, "n2", None, 10)).await.unwrap(), RunClaim::Claimed(_)));
    // A node taking over from the dead owner takes the pair with it.
    assert!(matches!(t.store.claim_run(claim(&runs[2], "n2", Some("n1"), 10)).await.unwrap(), RunClaim::Claimed(_)));

    // An ending guarded by a node leaves another node's run alone.
    let RunEndOutcome::OwnedElsewhere(left) =
        t.store.end_run(RunEnd { ender: Some("n2".into()), ..ending(&runs[0], RunStatus::Failed, None) }, &terminal).await.unwrap()
    else {
        panic!("owned elsewhere")
    };
    assert_eq!((left.status, left.node_id.as_deref()), (RunStatus::Queued, Some("n1")));
    for (run, ender) in [(&runs[0], "n1"), (&runs[1], "n1"), (&runs[2], "n2")] {
        let end = RunEnd { ender: Some(ender.into()), ..ending(run, RunStatus::Cancelled, None) };
        assert!(matches!(t.store.end_run(end, &terminal).await.unwrap(), RunEndOutcome::Ended(_)));
    }
    // The pair is free: any node may take the next run; a running run holds the pair too.
    let next = send_with(&t, &c, &alice, "next", &one).await.runs[0].clone();
    assert!(matches!(t.store.claim_run(claim(&next, "n2", None, 10)).await.unwrap(), RunClaim::Claimed(_)));
    t.store.start_run(&next.id, "n2", "demo", "demo", 0).await.unwrap().expect("started");
    let after = send_with(&t, &c, &alice, "after", &one).await.runs[0].clone();
    assert!(matches!(t.store.claim_run(claim(&after, "n1", None, 10)).await.unwrap(), RunClaim::Busy { ref owner, .. } if owner == "n2"));
    // An unowned run ends under a guard (a cancel racing a claim).
    let end = RunEnd { ender: Some("n1".into()), ..ending(&after, RunStatus::Cancelled, None) };
    assert!(matches!(t.store.end_run(end, &terminal).await.unwrap(), RunEndOutcome::Ended(_)));

    // Runs of one pair claimed at once from two nodes: every claimed one has
    // the same owner, every refused one names it.
    let b = t.agent(&alice, "Bea").await;
    let of_b = RunTriggers { runs: vec![trigger(&b, &alice)], channel_runs_per_minute: 0 };
    let mut tasks = Vec::new();
    for i in 0..6 {
        let run = send_with(&t, &c, &alice, &format!("b{i}"), &of_b).await.runs[0].clone();
        let store = t.store.clone();
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        tasks.push(tokio::spawn(async move { store.claim_run(claim(&run, node, None, 10)).await }));
    }
    let mut owners = std::collections::HashSet::new();
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            RunClaim::Claimed(r) => {
                claimed += 1;
                owners.insert(r.node_id.expect("owner"));
            }
            RunClaim::Busy { owner, .. } => {
                owners.insert(owner);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 3, "the three runs of the node that claimed first");
    assert_eq!(owners.len(), 1, "one owner for the pair: {owners:?}");
}
