//! A thousand runs with faults injected at random (cancels, provider errors
//! before and after content, tool errors, panics, subscribers cut off and
//! recovering): every run has exactly one terminal event and nothing after
//! it, its `seq` runs 1, 2, 3, … without gap, and none is left active.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chorus_testkit::db::TestEngine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{App, TestUser};
use crate::harness::*;

const USERS: usize = 40;
const PER_USER: usize = 25;

both_engines!(a_thousand_runs_with_random_faults_each_end_exactly_once, super::storm);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Cancel,
    ProviderFails,
    ProviderFailsMidway,
    ToolError,
    Panic,
}

impl Fault {
    fn pick(rng: &mut StdRng) -> Fault {
        match rng.random_range(0..100) {
            0..15 => Fault::Cancel,
            15..25 => Fault::ProviderFails,
            25..35 => Fault::ProviderFailsMidway,
            35..50 => Fault::ToolError,
            50..55 => Fault::Panic,
            _ => Fault::None,
        }
    }

    fn text(self, i: usize) -> String {
        match self {
            Fault::None => format!("message {i}, please answer"),
            Fault::Cancel => format!("message {i}, a long one to cancel"),
            Fault::ProviderFails => format!("message {i} [fault:500]"),
            Fault::ProviderFailsMidway => format!("message {i} [fault:error-after:3]"),
            Fault::ToolError => format!("message {i}: what is 7/0 ?"),
            Fault::Panic => format!("message {i} [fault:panic]"),
        }
    }
}

/// One user's channel, followed by one connection that is cut off and
/// comes back (with recovery) now and then.
async fn follow(app: Arc<App>, user: TestUser, room: Room, runs: usize, seed: u64, cancels: Arc<Mutex<BTreeSet<String>>>) -> BTreeMap<String, Vec<Value>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut watch = Watch::new(&app, &user, &room).await;
    let mut seen_offsets = BTreeSet::new();
    while watch.ended() < runs {
        let p = watch.next().await;
        if let Some(offset) = p["offset"].as_u64() {
            assert!(seen_offsets.insert(offset), "offset {offset} twice");
        }
        // A run to cancel: once it is known, from another connection.
        if p["type"] == "agent_queued" || p["type"] == "agent_started" {
            let trigger = p["data"]["trigger_message_id"].as_str().unwrap_or_default().to_owned();
            if cancels.lock().await.remove(&trigger) {
                let run = p["data"]["run_id"].as_str().unwrap().to_owned();
                let (app, token) = (app.clone(), user.token.clone());
                tokio::spawn(async move {
                    let r = app.post(&format!("/api/v1/runs/{run}/cancel"), &token, json!({})).await;
                    assert_eq!(r.status, 200, "{:?}", r.body);
                });
            }
        }
        // The client disconnects, and comes back where it left off.
        if rng.random_range(0..100) < 2 {
            let position = json!({ "offset": p["offset"], "epoch": p["epoch"] });
            let mut ws = app.ws(&user.token).await;
            let r = ws.request(json!({ "type": "subscribe", "channel": room.stream, "since": position })).await;
            assert_eq!(r["result"]["recovered"], true, "{r}");
            watch.ws = ws;
        }
    }
    watch.runs
}

async fn storm(engine: TestEngine) {
    let app = Arc::new(
        App::start_with(engine, |c| {
            fast_demo(c);
            c.agents.runs_per_user = 1_000;
            c.agents.running_per_user = 4;
            c.agents.max_concurrent_runs = 64;
            c.agents.resilience.max_retries = 0;
        })
        .await,
    );
    let mut followers = Vec::new();
    let mut senders = Vec::new();
    for u in 0..USERS {
        let user = app.user(&format!("user{u}")).await;
        let room = room(&app, &user, &format!("room{u}")).await;
        agent_in(&app, &user, &room, &format!("Agent {u}"), json!({ "response_policy": "always" })).await;
        let cancels = Arc::new(Mutex::new(BTreeSet::new()));
        followers.push(tokio::spawn(follow(app.clone(), user.clone(), room.clone(), PER_USER, 1000 + u as u64, cancels.clone())));
        let app = app.clone();
        senders.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(u as u64);
            let mut faults = Vec::new();
            for i in 0..PER_USER {
                let fault = Fault::pick(&mut rng);
                let message = say(&app, &user, &room, &fault.text(i)).await;
                if fault == Fault::Cancel {
                    cancels.lock().await.insert(message["id"].as_str().unwrap().to_owned());
                }
                faults.push(fault);
            }
            faults
        }));
    }
    let mut faults = Vec::new();
    for s in senders {
        faults.extend(s.await.unwrap());
    }
    let mut total = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for f in followers {
        let runs = f.await.unwrap();
        total += runs.len();
        for (run, events) in &runs {
            assert_well_formed(run, events);
            let last = events.last().unwrap();
            let code = last["data"]["code"].as_str().unwrap_or("completed").to_owned();
            *codes.entry(code).or_default() += 1;
        }
    }
    assert_eq!(total, USERS * PER_USER);
    eprintln!("{} runs: faults {:?}; endings {codes:?}", total, count(&faults));
    for code in ["completed", "cancelled", "provider_error", "internal"] {
        assert!(codes.get(code).copied().unwrap_or(0) > 0, "no `{code}` ending among {codes:?}");
    }
    // None left active, and the store agrees.
    let admin = app.admin("root").await;
    let health = app.get("/health/detailed", &admin.token).await;
    assert_eq!((health.body["checks"]["agents"]["active_runs"].as_u64(), health.body["checks"]["agents"]["queued_runs"].as_u64()), (Some(0), Some(0)), "{:?}", health.body);
    Arc::into_inner(app).expect("no other handle").stop().await;
}

fn count(faults: &[Fault]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in faults {
        *m.entry(format!("{f:?}")).or_default() += 1;
    }
    m
}
