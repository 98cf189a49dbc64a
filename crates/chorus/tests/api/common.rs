//! A real Chorus server (the composition root of `chorus serve`) on
//! 127.0.0.1:0 with its own database, and helpers to call it.

#![allow(dead_code)]

use std::sync::Arc;

use chorus::config::Config;
use chorus::server::Server;
use chorus_auth::{HmacSecret, MintRequest, mint_token};
use chorus_clock::ManualClock;
use chorus_store::{NewUser, UserRole};
use chorus_testkit::WsClient;
use chorus_testkit::db::{TestDatabase, TestEngine};
use serde_json::Value;

use crate::conformance::{self, Conformance};

pub const SECRET: &str = "api-test-secret-0123456789abcdef0123456789";
pub const API_KEY: &str = "api-test-key-0123456789";

/// Runs a test body on both engines: `both_engines!(name, body_fn)` where
/// `async fn body_fn(engine: TestEngine)`.
macro_rules! both_engines {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                $body(chorus_testkit::db::TestEngine::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                $body(chorus_testkit::db::TestEngine::Postgres).await
            }
        }
    };
}

/// One response: status, JSON body (Null if none) and the `x-request-id` header.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub request_id: Option<String>,
    pub headers: reqwest::header::HeaderMap,
}

/// A user with a valid access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub token: String,
}

pub struct App {
    server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    db: TestDatabase,
    pub dir: tempfile::TempDir,
    conformance: Arc<Conformance>,
    pub config: Config,
    /// The server's clock, starting at the wall clock's time: tests move it
    /// instead of waiting.
    pub clock: ManualClock,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl App {
    pub async fn start(engine: TestEngine) -> App {
        Self::start_with(engine, |_| {}).await
    }

    /// Starts a server; `tweak` adjusts the configuration first.
    pub async fn start_with(engine: TestEngine, tweak: impl FnOnce(&mut Config)) -> App {
        install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDatabase::create(engine).await;
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.server.bind = "127.0.0.1:0".parse().expect("addr");
        config.auth.hmac_secret = Some(SECRET.into());
        config.auth.api_keys = vec![API_KEY.into()];
        config.auth.leeway = std::time::Duration::ZERO;
        config.store.url = db.url.clone();
        tweak(&mut config);
        let clock = ManualClock::starting_now();
        let server = Server::start(&config, Arc::new(clock.clone())).await.expect("server start");
        let base = format!("http://{}", server.addr());
        let http = reqwest::Client::builder().build().expect("http client");
        let doc: Value = http.get(format!("{base}/api/v1/openapi.json")).send().await.expect("openapi").json().await.expect("openapi json");
        App { server: Some(server), base, http, db, dir, conformance: Conformance::shared(doc), config, clock }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Any request; every response is checked against the OpenAPI document.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// Sends a request built on `self.http` (for headers or raw bodies
    /// `call` cannot express) and checks the response like `call`.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        self.send_with(&self.http, req).await
    }

    /// [`send`](Self::send) through another client (e.g. one bound to another source address).
    pub async fn send_with(&self, client: &reqwest::Client, req: reqwest::RequestBuilder) -> Resp {
        let req = req.build().expect("request");
        let method = req.method().as_str().to_owned();
        let path = req.url().path().to_owned();
        let res = client.execute(req).await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let request_id = headers.get(conformance::REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = res.text().await.expect("response body");
        conformance::assert_conforms(
            &self.conformance,
            &conformance::Observed {
                method: &method,
                path: &path,
                status,
                content_type: content_type.as_deref(),
                request_id: request_id.as_deref(),
                body: &text,
            },
        );
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, body, request_id, headers }
    }

    /// The OpenAPI document the server serves, with its checker.
    pub fn conformance(&self) -> &Conformance {
        &self.conformance
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call("DELETE", path, Some(token), None).await
    }

    /// A user created directly in the store, with a token minted by the
    /// server's secret (no login session): for tests of other routes.
    pub async fn user(&self, username: &str) -> TestUser {
        self.user_with_role(username, UserRole::User).await
    }

    pub async fn admin(&self, username: &str) -> TestUser {
        self.user_with_role(username, UserRole::Admin).await
    }

    async fn user_with_role(&self, username: &str, role: UserRole) -> TestUser {
        let user = self
            .server()
            .store()
            .create_user(NewUser { username: username.into(), email: None, password_hash: None, role, external: None })
            .await
            .expect("create user");
        let token = self.token_for(&user.id, None);
        TestUser { id: user.id, username: username.into(), token }
    }

    /// A token for a user id, optionally tied to a login session, valid
    /// for an hour of the server's clock from now.
    pub fn token_for(&self, user_id: &str, session_id: Option<&str>) -> String {
        mint_token(
            &HmacSecret::new(SECRET),
            &MintRequest {
                user: user_id.into(),
                ttl: std::time::Duration::from_secs(3600),
                session_id: session_id.map(str::to_owned),
                ..MintRequest::default()
            },
            &self.clock,
        )
        .expect("mint")
    }

    /// A WebSocket connected with `token`, past its `connected` push.
    pub async fn ws(&self, token: &str) -> WsClient {
        let url = format!("ws://{}/ws?token={token}", self.server().addr());
        let mut c = WsClient::connect(&url).await.expect("ws connect");
        let first = c.push().await;
        assert_eq!(first["type"], "connected", "{first}");
        c
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.db.drop_now().await;
    }
}
