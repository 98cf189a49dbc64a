//! A bidirectional session: what a WebSocket (or any framed transport)
//! drives with text frames. It applies frame limits, decodes, authenticates
//! on `connect`, runs commands through the [`Executor`] and queues replies.
//! The transport only moves frames and honours the returned [`Flow`].

use std::sync::Arc;

use chorus_protocol::command::peek_id;
use chorus_protocol::{Command, ErrorCode, Reply, ReplyBody, decode_request};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::executor::{CommandError, Executor};
use crate::hub::{Lease, UserLimiter};
use crate::ids::Transport;
use crate::identity::Identity;
use crate::limiter::{Rate, RateLimited, TokenBucket};
use crate::outbound::{Outbound, Outgoing};
use crate::supervise::catch_panic;
use chorus_protocol::CloseCode;

/// What the transport should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(CloseCode),
}

/// Malformed frames tolerated: a burst of this many, refilling one per second.
const MALFORMED_BURST: u32 = 20;

pub struct Session {
    executor: Arc<Executor>,
    transport: Transport,
    request_id: Arc<str>,
    outbound: Arc<Outbound>,
    lease: Option<Lease>,
    frames: TokenBucket,
    malformed: TokenBucket,
    strikes: u32,
}

impl Session {
    pub fn new(executor: Arc<Executor>, transport: Transport, request_id: Arc<str>, outbound: Arc<Outbound>) -> Self {
        let now = Instant::now();
        let rates = executor.hub().rates();
        Self {
            frames: TokenBucket::new(Rate { per_second: rates.frames_per_second, burst: rates.frames_burst }, now),
            malformed: TokenBucket::new(Self::malformed_rate(), now),
            executor,
            transport,
            request_id,
            outbound,
            lease: None,
            strikes: 0,
        }
    }

    fn malformed_rate() -> Rate {
        Rate { per_second: 1.0, burst: MALFORMED_BURST }
    }

    pub fn connection(&self) -> Option<&Arc<Connection>> {
        self.lease.as_ref().and_then(Lease::connection)
    }

    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Opens the connection for an identity verified at upgrade time.
    pub async fn open(&mut self, identity: Identity) -> Result<&Arc<Connection>, CommandError> {
        let lease = self.executor.open(identity, self.transport, self.request_id.clone(), self.outbound.clone()).await?;
        let lease = self.lease.insert(lease);
        lease.connection().ok_or_else(|| CommandError::new(chorus_protocol::ErrorCode::Internal, "connection lost"))
    }

    /// Handles one text frame.
    pub async fn on_text(&mut self, frame: &[u8]) -> Flow {
        let hub = self.executor.hub().clone();
        let (rates, limits) = (hub.rates(), hub.limits());

        let rate = Rate { per_second: rates.frames_per_second, burst: rates.frames_burst };
        let refused = match self.frames.take(rate, Instant::now()) {
            Err(wait) => {
                hub.metrics().rate_limited("connection_frames");
                Some(RateLimited::new("frames on this connection", wait))
            }
            Ok(()) => match self.connection() {
                Some(conn) => hub.check_user_rate(UserLimiter::Frames, &conn.user).err(),
                None => None,
            },
        };
        if let Some(refused) = refused {
            self.strikes += 1;
            if self.strikes >= rates.flood_strikes.max(1) {
                return Flow::Close(CloseCode::Flood);
            }
            return self.reply_error(peek_id(frame), ErrorCode::RateLimited, &refused.to_string()).await;
        }
        self.strikes = 0;

        if frame.len() > limits.frame_bytes {
            // Oversize frames count as malformed: a client sending them on and on is abusive.
            if self.malformed.take(Self::malformed_rate(), Instant::now()).is_err() {
                return Flow::Close(CloseCode::ProtocolViolation);
            }
            let msg = format!("frame is {} bytes; the limit is {}", frame.len(), limits.frame_bytes);
            return self.reply_error(peek_id(frame), ErrorCode::FrameTooLarge, &msg).await;
        }
        let request = match decode_request(frame) {
            Ok(r) => r,
            Err(e) => {
                if self.malformed.take(Self::malformed_rate(), Instant::now()).is_err() {
                    return Flow::Close(CloseCode::ProtocolViolation);
                }
                return self.reply_error(e.id, e.code, &e.message).await;
            }
        };

        let Some(conn) = self.connection().cloned() else {
            return self.before_connect(request).await;
        };
        let executor = self.executor.clone();
        let id = request.id;
        let run = async move {
            let executed = executor.execute(&conn, request).await;
            if conn.outbound.push_reply(Outgoing::Reply(executed.reply.encode())).await.is_err() {
                return;
            }
            // The replay runs beside the reader: pongs and other commands keep flowing.
            if let Some(follow_up) = executed.follow_up {
                executor.hub().spawn_follow_up(follow_up);
            }
        };
        // Boxed so an idle session's future stays small.
        match catch_panic(hub.metrics(), "connection", Box::pin(run)).await {
            Some(()) => match self.outbound.closed() {
                Some(code) => Flow::Close(code),
                None => Flow::Continue,
            },
            None => {
                let _ = self.reply_error(Some(id), ErrorCode::Internal, "internal error; the connection will close").await;
                Flow::Close(CloseCode::InternalError)
            }
        }
    }

    async fn before_connect(&mut self, request: chorus_protocol::Request) -> Flow {
        match request.command {
            Command::Connect { token } => {
                let opened = async {
                    let identity = self.executor.authenticate(&token).await?;
                    self.open(identity).await.cloned()
                };
                match opened.await {
                    Ok(conn) => {
                        let reply = Reply::ok(request.id, ReplyBody::Connected(self.executor.connected(&conn)));
                        self.push(reply).await
                    }
                    Err(e) => {
                        let _ = self.reply_error(Some(request.id), e.code, &e.message).await;
                        Flow::Close(self.refusal_code(e.code))
                    }
                }
            }
            Command::Ping => self.push(Reply::ok(request.id, ReplyBody::Pong { pong: true })).await,
            _ => self.reply_error(Some(request.id), ErrorCode::Unauthorized, "send `connect` with a token first").await,
        }
    }

    /// The close code for a refused `connect`: a bad token is final, a full
    /// node or an unreachable key set is worth retrying.
    pub fn refusal_code(&self, code: ErrorCode) -> CloseCode {
        match code {
            ErrorCode::Unavailable if self.executor.hub().is_shutting_down() => CloseCode::ServiceRestart,
            ErrorCode::Unavailable => CloseCode::TryAgainLater,
            _ => CloseCode::Unauthorized,
        }
    }

    async fn reply_error(&self, id: Option<u64>, code: ErrorCode, message: &str) -> Flow {
        let endpoint = format!("{}:frame", self.transport.as_str());
        self.executor.hub().metrics().error(&endpoint, code.as_str());
        let err = self.executor.error_object(&self.request_id, id, code, message);
        self.push(Reply::err(id, err)).await
    }

    async fn push(&self, reply: Reply) -> Flow {
        match self.outbound.push_reply(Outgoing::Reply(reply.encode())).await {
            Ok(()) => Flow::Continue,
            Err(code) => Flow::Close(code),
        }
    }

    /// Releases the connection's resources. Call once the transport is done;
    /// if a task unwinds instead, dropping the session releases them too.
    pub async fn end(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.end().await;
        }
    }
}
