//! SIGHUP reloads of allowed origins, rate limits and the log level: the
//! reload names the changed keys, and each change takes effect at once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{Served, install_crypto, refused_upgrade, write_config_at, ws_connect};

const SECRET: &str = "binary-reload-secret-0123456789abcdef0123";
const ORIGIN: &str = "http://app.example";

fn token(user: &str) -> String {
    chorus_auth::mint_token(
        &chorus_auth::HmacSecret::new(SECRET),
        &chorus_auth::MintRequest { user: user.into(), ttl: Duration::from_secs(600), ..Default::default() },
        &chorus_clock::SystemClock,
    )
    .unwrap()
}

/// `GET /health` with this `Origin`: the CORS answer, and the request id.
async fn cors_answer(served: &Served, origin: &str) -> (Option<String>, String) {
    let res = reqwest::Client::new().get(served.url("/health")).header("origin", origin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let allow = res.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
    (allow, res.headers()["x-request-id"].to_str().unwrap().to_owned())
}

#[tokio::test]
async fn sighup_reloads_allowed_origins_rate_limits_and_the_log_level() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let auth = format!("[auth]\nhmac_secret = \"{SECRET}\"\n");
    let config = write_config_at(dir.path(), "info", &auth);
    let served = Served::start(dir.path(), &config, &[]).await;
    let url = format!("ws://{}/ws?token={}", served.addr, token("alice"));

    // Before: a foreign origin is refused, frames are plentiful, no debug lines.
    assert_eq!(refused_upgrade(&url, &[("origin", ORIGIN)]).await, 403);
    assert_eq!(cors_answer(&served, ORIGIN).await.0, None);
    let (mut early, _) = ws_connect(&url, &[]).await.unwrap();
    assert_eq!(early.push().await["type"], "connected");
    for _ in 0..5 {
        assert_eq!(early.request(json!({"type": "ping"})).await["result"]["pong"], true);
    }
    // Lines are written in order: once this request's line is out, a debug
    // line of the connection opened before it would be out too.
    let (_, rid) = cors_answer(&served, "http://other.example").await;
    served.wait_for(|v| v["message"] == "request" && v["span"]["request_id"] == rid.as_str()).await;
    let debug: Vec<Value> = served.json_lines().into_iter().filter(|v| v["level"] == "DEBUG").collect();
    assert!(debug.is_empty(), "debug lines at level info: {debug:?}");

    let reloaded_file = format!(
        "{auth}\n[cors]\nallowed_origins = [\"{ORIGIN}\"]\n\n[rate_limits]\nframes_burst = 3\nframes_per_second = 0.01\n"
    );
    write_config_at(dir.path(), "chorus_server=debug,info", &reloaded_file);
    served.signal(libc::SIGHUP);
    let reloaded = served.wait_for(|v| v["message"] == "configuration reloaded").await;
    // `changed` is the list of keys, e.g. ["log.level", ...].
    let changed: BTreeSet<String> = serde_json::from_str(reloaded["changed"].as_str().expect("changed keys")).expect("a list of keys");
    let expected: BTreeSet<String> =
        ["cors.allowed_origins", "log.level", "rate_limits.frames_burst", "rate_limits.frames_per_second"].map(String::from).into();
    assert_eq!(changed, expected, "{reloaded}");
    assert!(
        !served.output().iter().any(|l| l.contains("only after a restart")),
        "nothing restart-only changed:\n{}",
        served.output().join("\n")
    );

    // Origins: the listed one may now open sockets and gets CORS answers; others still may not.
    let (mut late, late_rid) = ws_connect(&url, &[("origin", ORIGIN)]).await.expect("the allowed origin upgrades");
    assert_eq!(late.push().await["type"], "connected");
    assert_eq!(refused_upgrade(&url, &[("origin", "http://evil.example")]).await, 403);
    assert_eq!(cors_answer(&served, ORIGIN).await.0.as_deref(), Some(ORIGIN));

    // Log level: the new connection's debug line appears, in its upgrade's span.
    let open = served.wait_for(|v| v["message"] == "websocket open" && v["span"]["request_id"] == late_rid.as_str()).await;
    assert_eq!(open["level"], "DEBUG");

    // Rate limit: three frames now, on the connection opened before the reload too.
    for c in [&mut early, &mut late] {
        for _ in 0..3 {
            assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
        }
        let r = c.request(json!({"type": "ping"})).await;
        assert_eq!(r["error"]["error"], "rate_limited", "{r}");
    }
}
