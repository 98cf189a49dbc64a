//! The webhook client against a mock webhook service over real sockets:
//! signatures, the one retry, timeouts, the circuit breaker opening and
//! closing again (with an injected clock), redirects and the address policy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_clock::{Clock, ManualClock, SystemClock};
use chorus_external::{
    AddressPolicy, AttemptError, BreakerOpen, BreakerState, Delivered, Delivery, DeliveryError, ExternalAgentsConfig,
    SigningSecret, WebhookClient, WebhookMetrics, WebhookUrl,
};
use chorus_testkit::webhook::{MockWebhook, Reply};

fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn loopback() -> Arc<AddressPolicy> {
    Arc::new(AddressPolicy::new(&["127.0.0.0/8"]).unwrap())
}

fn config() -> ExternalAgentsConfig {
    ExternalAgentsConfig { retry_delay: Duration::from_millis(20), ..ExternalAgentsConfig::default() }
}

fn client_with(
    config: &ExternalAgentsConfig,
    policy: Arc<AddressPolicy>,
    clock: Arc<dyn Clock>,
) -> (WebhookClient, WebhookMetrics) {
    install_tls();
    let metrics = WebhookMetrics::unregistered();
    (WebhookClient::new(config, policy, clock, metrics.clone()).unwrap(), metrics)
}

fn secret(n: u8) -> SigningSecret {
    SigningSecret::from_bytes([n; 32])
}

async fn deliver(
    client: &WebhookClient,
    url: &WebhookUrl,
    secrets: &[SigningSecret],
    id: &str,
) -> Result<Delivered, DeliveryError> {
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"type":"run_requested","run":{"id":id}})).unwrap());
    client.deliver(Delivery { agent_id: "agent-1", url, secrets, id, body }).await
}

#[tokio::test]
async fn deliveries_are_signed_and_carry_the_documented_headers() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    let (client, metrics) = client_with(&config(), loopback(), Arc::new(SystemClock));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    let done = deliver(&client, &url, &[s], "run-1").await.unwrap();
    assert_eq!((done.attempts, done.status), (1, 200));
    let got = mock.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.verified_by, Some(0), "signature checked by the mock");
    assert!(r.fresh, "timestamp within the replay window");
    assert_eq!(r.id.as_deref(), Some("run-1"));
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert!(r.user_agent.as_deref().unwrap().starts_with("Chorus-Webhook/"));
    assert_eq!(r.json["run"]["id"], "run-1");
    assert_eq!(metrics.deliveries("delivered"), 1);

    // A receiver holding another secret rejects it.
    mock.set_secrets(&[&secret(9).reveal()]);
    deliver(&client, &url, &[secret(1)], "run-2").await.unwrap();
    assert_eq!(mock.received()[1].verified_by, None);

    // While a rotated secret is honoured, both sign: a receiver with either accepts.
    mock.set_secrets(&[&secret(2).reveal(), &secret(1).reveal()]);
    deliver(&client, &url, &[secret(3), secret(1)], "run-3").await.unwrap();
    assert_eq!(mock.received()[2].verified_by, Some(1));
}

#[tokio::test]
async fn a_failed_attempt_is_retried_once_with_the_same_id() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    let (client, metrics) = client_with(&config(), loopback(), Arc::new(SystemClock));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();

    mock.script([Reply::Status(503)]);
    let done = deliver(&client, &url, std::slice::from_ref(&s), "run-1").await.unwrap();
    assert_eq!(done.attempts, 2);
    let got = mock.received();
    assert_eq!(got.iter().map(|r| r.id.clone().unwrap()).collect::<Vec<_>>(), ["run-1", "run-1"]);
    assert!(got.iter().all(|r| r.verified_by == Some(0)), "the retry is signed too");

    mock.script([Reply::Status(500), Reply::Status(502)]);
    let err = deliver(&client, &url, std::slice::from_ref(&s), "run-2").await.unwrap_err();
    assert_eq!(err, DeliveryError::Failed { attempts: 2, last: AttemptError::Status(502) });
    assert_eq!(mock.count(), 4, "one retry, not more");

    // A refusal (4xx) is final: no retry.
    mock.script([Reply::Status(401)]);
    let err = deliver(&client, &url, std::slice::from_ref(&s), "run-3").await.unwrap_err();
    assert_eq!(err, DeliveryError::Failed { attempts: 1, last: AttemptError::Status(401) });
    assert_eq!(mock.count(), 5);
    // 429 is worth a retry.
    mock.script([Reply::Status(429)]);
    assert_eq!(deliver(&client, &url, &[s], "run-4").await.unwrap().attempts, 2);
    assert_eq!((metrics.attempts("status"), metrics.attempts("ok")), (5, 2));
}

#[tokio::test]
async fn a_retry_also_follows_a_timeout() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    let cfg = ExternalAgentsConfig { timeout: Duration::from_millis(300), ..config() };
    let (client, metrics) = client_with(&cfg, loopback(), Arc::new(SystemClock));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    mock.script([Reply::Hang]);
    let done = deliver(&client, &url, &[s], "run-1").await.unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(metrics.attempts("timeout"), 1);
}

/// With paused time the 10 s timeout passes without waiting: a service that
/// never answers costs two attempts of 10 s each, and counts as one failure.
#[tokio::test(start_paused = true)]
async fn a_service_that_never_answers_times_out_after_ten_seconds_per_attempt() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    mock.set_default(Reply::Hang);
    let (client, _) = client_with(&ExternalAgentsConfig::default(), loopback(), Arc::new(SystemClock));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    let started = tokio::time::Instant::now();
    let err = deliver(&client, &url, &[s], "run-1").await.unwrap_err();
    assert_eq!(err, DeliveryError::Failed { attempts: 2, last: AttemptError::Timeout(Duration::from_secs(10)) });
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(21) && waited < Duration::from_secs(22),
        "10 s + 1 s pause + 10 s, took {waited:?}"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_five_failed_deliveries_and_closes_again() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    mock.set_default(Reply::Status(500));
    let clock = ManualClock::starting_at(1_700_000_000_000);
    let (client, metrics) = client_with(&config(), loopback(), Arc::new(clock.clone()));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    let secrets = [s];

    for i in 0..5 {
        assert!(matches!(
            deliver(&client, &url, &secrets, &format!("r{i}")).await,
            Err(DeliveryError::Failed { attempts: 2, .. })
        ));
    }
    assert_eq!(mock.count(), 10);
    assert_eq!(client.breakers().state("agent-1"), BreakerState::Open);
    assert_eq!(metrics.breaker_opened_total(), 1);

    // Open: refused at once, no request.
    let err = deliver(&client, &url, &secrets, "r5").await.unwrap_err();
    assert_eq!(err, DeliveryError::BreakerOpen(BreakerOpen { retry_after: Duration::from_secs(30) }));
    assert_eq!(mock.count(), 10);
    assert_eq!(metrics.deliveries("breaker_open"), 1);

    // Half-open after 30 s: a failing probe opens it again.
    clock.advance_ms(30_000);
    assert_eq!(client.breakers().state("agent-1"), BreakerState::HalfOpen);
    assert!(deliver(&client, &url, &secrets, "r6").await.is_err());
    assert_eq!(client.breakers().state("agent-1"), BreakerState::Open);
    assert_eq!(metrics.breaker_opened_total(), 2);

    // The service recovers: the next probe closes the breaker.
    clock.advance_ms(30_000);
    mock.set_default(Reply::Status(204));
    assert_eq!(deliver(&client, &url, &secrets, "r7").await.unwrap().status, 204);
    assert_eq!(client.breakers().state("agent-1"), BreakerState::Closed);
    assert!(deliver(&client, &url, &secrets, "r8").await.is_ok());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let s = secret(1);
    let target = MockWebhook::start(&[&s.reveal()]).await;
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    mock.set_default(Reply::Redirect(307, target.url("/elsewhere")));
    let (client, _) = client_with(&config(), loopback(), Arc::new(SystemClock));
    let url = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    let err = deliver(&client, &url, &[s], "r1").await.unwrap_err();
    assert_eq!(err, DeliveryError::Failed { attempts: 1, last: AttemptError::Redirect(307) });
    assert_eq!((mock.count(), target.count()), (1, 0));
}

#[tokio::test]
async fn non_public_addresses_are_refused_at_delivery_time_too() {
    let s = secret(1);
    let mock = MockWebhook::start(&[&s.reveal()]).await;
    // Saved while loopback was allowed; the client's policy no longer allows it.
    let (strict, metrics) = client_with(&config(), Arc::new(AddressPolicy::default()), Arc::new(SystemClock));

    let literal = WebhookUrl::parse(&mock.url("/hook"), &loopback()).unwrap();
    let err = deliver(&strict, &literal, std::slice::from_ref(&s), "r1").await.unwrap_err();
    assert!(matches!(err, DeliveryError::Failed { attempts: 1, last: AttemptError::Address(_) }), "{err:?}");

    // A name is checked by what it resolves to, not by its text.
    let name = WebhookUrl::parse(&format!("http://localhost:{}/hook", mock.addr().port()), &loopback()).unwrap();
    let err = deliver(&strict, &name, std::slice::from_ref(&s), "r2").await.unwrap_err();
    match err {
        DeliveryError::Failed { attempts: 1, last: AttemptError::Address(msg) } => {
            assert!(msg.contains("non-public"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.count(), 0, "nothing reached the service");
    assert_eq!(metrics.attempts("address"), 2);

    let (open, _) = client_with(&config(), loopback(), Arc::new(SystemClock));
    assert!(deliver(&open, &name, &[s], "r3").await.is_ok());
}
