//! Test clients and fixtures shared by Chorus's integration tests: a
//! WebSocket client, an SSE client, a WebSocket client that never answers
//! pings, Prometheus text lookup, throwaway databases, the official AG-UI
//! client (through Node) and a mock webhook service for external agents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers: a failure should stop the test where it happens.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod agui;
pub mod db;
pub mod webhook;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Finds a metric sample's value in Prometheus text, e.g. `chorus_panics_total{task="connection"}`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().split(' ').next()?.parse().ok()))
}

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pushes: VecDeque<Value>,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient { ws, next_id: 1, pushes: VecDeque::new() })
    }

    /// Connects over a socket with a receive buffer of `recv_buffer` bytes, so
    /// that a client that does not read holds up the server soon.
    pub async fn connect_with_recv_buffer(url: &str, recv_buffer: u32) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let req = url.into_client_request()?;
        let host = req.uri().host().expect("host").to_owned();
        let port = req.uri().port_u16().expect("port");
        let addr: SocketAddr = format!("{host}:{port}").parse().expect("an IP address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
        Ok(WsClient { ws, next_id: 1, pushes: VecDeque::new() })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::Text(text.into().into())).await.expect("send");
    }

    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Sends a command (assigning an `id`) and returns the whole reply.
    pub async fn request(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        self.send_text(cmd.to_string()).await;
        self.reply(Some(id)).await
    }

    /// Waits for the reply with this id (`None`: the next reply with `id: null`).
    pub async fn reply(&mut self, id: Option<u64>) -> Value {
        loop {
            let v = self.frame().await;
            if v.get("type").is_some() && v.get("id").is_none() {
                self.pushes.push_back(v);
                continue;
            }
            if v.get("id").map(|x| x.as_u64()) == Some(id) || (id.is_none() && v["id"].is_null()) {
                return v;
            }
            panic!("unexpected reply {v} while waiting for id {id:?}");
        }
    }

    /// The next push.
    pub async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        let v = self.frame().await;
        assert!(v.get("id").is_none(), "unexpected reply {v} while waiting for a push");
        v
    }

    /// The next push of this type, dropping others.
    pub async fn push_of(&mut self, kind: &str) -> Value {
        loop {
            let p = self.push().await;
            if p["type"] == kind {
                return p;
            }
        }
    }

    /// Reads one text frame as JSON, failing the test on close or timeout.
    pub async fn frame(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json frame"),
                Some(Ok(Message::Close(c))) => panic!("closed while waiting for a frame: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error while waiting for a frame: {e}"),
                None => panic!("socket ended while waiting for a frame"),
            }
        }
    }

    /// The next text frame as JSON, or the close code if the server closed.
    pub async fn frame_or_close(&mut self) -> Result<Value, u16> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("json frame")),
                Some(Ok(Message::Close(Some(f)))) => return Err(u16::from(f.code)),
                Some(Ok(Message::Close(None))) => return Err(1005),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    /// Answers the close, as a real client does, so the server need not wait for it.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Close(Some(f)))) => {
                    let _ = self.ws.flush().await;
                    return (u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => {
                    let _ = self.ws.flush().await;
                    return (1005, String::new());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Stops reading and writing for a while without closing.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub fn from_inner(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        WsClient { ws, next_id: 1000, pushes: VecDeque::new() }
    }
}

/// One parsed SSE event (or a comment).
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// One block of an SSE stream: an event, comment lines, or neither (`retry:`).
enum Block {
    Event(SseEvent),
    Comment(String),
    Other,
}

/// Takes the next complete block (up to a blank line) out of `buf`.
fn take_block(buf: &mut String) -> Option<Block> {
    let end = buf.find("\n\n")?;
    let block: String = buf.drain(..end + 2).collect();
    let mut ev = SseEvent { id: None, event: "message".into(), data: Value::Null };
    let mut is_event = false;
    let mut comment = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            ev.id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            ev.event = v.to_owned();
            is_event = true;
        } else if let Some(v) = line.strip_prefix("data: ") {
            ev.data = serde_json::from_str(v).unwrap();
            is_event = true;
        }
    }
    Some(match (is_event, comment) {
        (true, _) => Block::Event(ev),
        (false, Some(c)) => Block::Comment(c),
        (false, None) => Block::Other,
    })
}

pub struct SseClient {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    pub comments: usize,
    pub last_id: Option<String>,
}

impl SseClient {
    /// Opens `GET {base}/sse?{query}` with a bearer token; an HTTP error comes back as (status, body).
    pub async fn open(http: &reqwest::Client, base: &str, token: &str, query: &str, last_event_id: Option<&str>) -> Result<SseClient, (u16, Value)> {
        let mut req = http.get(format!("{base}/sse?{query}")).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        if res.status() != 200 {
            let status = res.status().as_u16();
            return Err((status, res.json().await.unwrap_or_default()));
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Ok(SseClient { body: res.bytes_stream().boxed(), buf: String::new(), comments: 0, last_id: None })
    }

    /// The next block; `None` when the stream ended.
    async fn next_block(&mut self) -> Option<Block> {
        loop {
            if let Some(block) = take_block(&mut self.buf) {
                match &block {
                    Block::Event(ev) => {
                        if let Some(id) = &ev.id {
                            self.last_id = Some(id.clone());
                        }
                    }
                    Block::Comment(_) => self.comments += 1,
                    Block::Other => {}
                }
                return Some(block);
            }
            match tokio::time::timeout(WAIT, self.body.next()).await.expect("timed out waiting for an SSE event") {
                Some(Ok(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return None,
            }
        }
    }

    /// The next event, skipping comments.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            match self.next_block().await? {
                Block::Event(ev) => return Some(ev),
                Block::Comment(_) | Block::Other => continue,
            }
        }
    }

    /// Reads until a comment (e.g. `keep-alive`) arrives; returns its text
    /// and the events that came before it.
    pub async fn next_comment(&mut self) -> (String, Vec<SseEvent>) {
        let mut before = Vec::new();
        loop {
            match self.next_block().await.expect("stream ended before a comment") {
                Block::Event(ev) => before.push(ev),
                Block::Comment(c) => return (c, before),
                Block::Other => {}
            }
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> SseEvent {
        loop {
            let e = self.next().await.expect("stream ended");
            if e.event == kind {
                return e;
            }
        }
    }
}

/// An SSE client over a bare TCP socket with a small receive buffer, read
/// only when asked: the way to be a stream reader that stops reading.
pub struct RawSseClient {
    stream: TcpStream,
    /// Undecoded body bytes (chunked transfer encoding).
    raw: Vec<u8>,
    /// Decoded body text not parsed into blocks yet.
    text: String,
    ended: bool,
    pub last_id: Option<String>,
}

impl RawSseClient {
    /// `GET {path_and_query}` with a bearer token and a receive buffer of
    /// `recv_buffer` bytes; an HTTP error comes back as (status, body text).
    pub async fn open(addr: SocketAddr, path_and_query: &str, token: &str, last_event_id: Option<&str>, recv_buffer: u32) -> Result<RawSseClient, (u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("tcp connect");
        let mut req = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write request");
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("response timeout").expect("read");
            assert!(n > 0, "closed before the response head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
        buf.drain(..end);
        if status != 200 {
            return Err((status, String::from_utf8_lossy(&buf).into_owned()));
        }
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        Ok(RawSseClient { stream, raw: buf, text: String::new(), ended: false, last_id: None })
    }

    /// Moves complete chunks from `raw` into `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size_line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let need = line_end + 2 + size + 2;
            if self.raw.len() < need {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..need);
            self.text.push_str(std::str::from_utf8(&data).expect("utf-8 chunk"));
        }
    }

    /// The next event, skipping comments; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        use tokio::io::AsyncReadExt;
        loop {
            self.dechunk();
            while let Some(block) = take_block(&mut self.text) {
                if let Block::Event(ev) = block {
                    if let Some(id) = &ev.id {
                        self.last_id = Some(id.clone());
                    }
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("timed out waiting for an SSE event") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A bare-bones WebSocket client over TCP that reads the server's frames but
/// never answers: the way to be a client that misses its pongs.
pub struct SilentClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SilentClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SilentClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write upgrade");
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("upgrade timeout").expect("read");
            assert!(n > 0, "closed during upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        SilentClient { stream, buf }
    }

    /// Reads frames until the server's close frame; returns its code and how many pings came first.
    pub async fn close_code(&mut self) -> (u16, usize) {
        use tokio::io::AsyncReadExt;
        let mut pings = 0;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x9 => pings += 1,
                    0x8 => {
                        let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                        return (code, pings);
                    }
                    _ => {}
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("read timeout").expect("read");
            assert!(n > 0, "socket ended without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked server frame: (opcode, payload, bytes used), if complete.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (usize::try_from(u64::from_be_bytes(buf[2..10].try_into().ok()?)).ok()?, 10),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return None;
    }
    Some((opcode, buf[header..header + len].to_vec(), header + len))
}
