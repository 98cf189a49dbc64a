//! A lean WebSocket client for the load generator.
//!
//! Hand-written rather than tungstenite because one process holds up to
//! 15,000 of these and reads ~100,000 frames/s on a core it shares with the
//! server: each connection is one socket and one small buffer (4 KiB, grown
//! only for a larger frame), one `read` can yield many frames, and pings are
//! answered inline. Server frames are unmasked; client frames are masked.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::FastRng;

const INITIAL_BUFFER: usize = 4096;
/// Larger than the server's frame hard cap (1 MiB) plus headers.
const MAX_BUFFER: usize = 4 * 1024 * 1024;
const MAX_HANDSHAKE: usize = 16 * 1024;

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    Io(io::Error),
    /// The upgrade was refused with this HTTP status (401, 429, 503, …).
    Status(u16),
    Protocol(&'static str),
    Timeout,
}

impl ConnectError {
    /// A short label for counting failures by kind.
    pub fn label(&self) -> String {
        match self {
            ConnectError::Io(e) => format!("io:{:?}", e.kind()),
            ConnectError::Status(s) => format!("http:{s}"),
            ConnectError::Protocol(p) => format!("protocol:{p}"),
            ConnectError::Timeout => "timeout".into(),
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// What `next` yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Text(&'a [u8]),
    Binary,
    /// The server closed the connection with this code (1005 when none was given).
    Close(u16),
}

pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being assembled...
    frag: Option<Vec<u8>>,
    frag_binary: bool,
    /// ...and, once complete, handed out from here until the next call.
    done: Option<Vec<u8>>,
    /// We sent a close frame (so a close from the server is not echoed).
    close_sent: bool,
    rng: FastRng,
}

/// The head of one frame found in the buffer.
struct Head {
    fin: bool,
    opcode: u8,
    payload_start: usize,
    payload_end: usize,
    mask: Option<[u8; 4]>,
}

impl WsClient {
    /// Upgrades an open TCP stream at `path` (e.g. `/ws?token=...`).
    pub async fn handshake(mut stream: TcpStream, host: &str, path: &str, timeout: Duration) -> Result<Self, ConnectError> {
        let mut rng = FastRng::new();
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        key[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let work = async {
            stream.write_all(request.as_bytes()).await?;
            let mut buf = vec![0u8; INITIAL_BUFFER];
            let mut end = 0;
            loop {
                if end == buf.len() {
                    if buf.len() >= MAX_HANDSHAKE {
                        return Err(ConnectError::Protocol("oversize upgrade response"));
                    }
                    buf.resize(buf.len() * 2, 0);
                }
                let n = stream.read(&mut buf[end..]).await?;
                if n == 0 {
                    return Err(ConnectError::Protocol("closed during upgrade"));
                }
                end += n;
                if let Some(head_end) = find(&buf[..end], b"\r\n\r\n") {
                    let status = parse_status(&buf[..head_end]).ok_or(ConnectError::Protocol("bad status line"))?;
                    if status != 101 {
                        return Err(ConnectError::Status(status));
                    }
                    // The loopback peer is the server under test: the 101 and the
                    // `Upgrade` header are enough; Sec-WebSocket-Accept is not checked.
                    let head = std::str::from_utf8(&buf[..head_end]).unwrap_or("").to_ascii_lowercase();
                    if !head.contains("upgrade: websocket") {
                        return Err(ConnectError::Protocol("101 without websocket upgrade"));
                    }
                    let mut client = WsClient { stream, buf, start: head_end + 4, end, frag: None, frag_binary: false, done: None, close_sent: false, rng };
                    client.compact();
                    return Ok(client);
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    /// The next data message or close. Pings are answered, pongs skipped.
    /// Not cancel-safe while a pong is being written (a cancelled read is fine).
    pub async fn next(&mut self) -> io::Result<Msg<'_>> {
        self.done = None;
        loop {
            match self.parse_head()? {
                Some(h) => {
                    self.start = h.payload_end;
                    if let Some(mask) = h.mask {
                        for (i, b) in self.buf[h.payload_start..h.payload_end].iter_mut().enumerate() {
                            *b ^= mask[i & 3];
                        }
                    }
                    match h.opcode {
                        0x1 | 0x2 if h.fin && self.frag.is_none() => {
                            return Ok(if h.opcode == 0x1 { Msg::Text(&self.buf[h.payload_start..h.payload_end]) } else { Msg::Binary });
                        }
                        0x1 | 0x2 => {
                            if self.frag.is_some() {
                                return Err(proto("new message inside a fragmented one"));
                            }
                            self.frag_binary = h.opcode == 0x2;
                            self.frag = Some(self.buf[h.payload_start..h.payload_end].to_vec());
                        }
                        0x0 => {
                            let frag = self.frag.as_mut().ok_or_else(|| proto("continuation without a message"))?;
                            frag.extend_from_slice(&self.buf[h.payload_start..h.payload_end]);
                            if frag.len() > MAX_BUFFER {
                                return Err(proto("fragmented message too large"));
                            }
                            if h.fin {
                                if self.frag_binary {
                                    self.frag = None;
                                    return Ok(Msg::Binary);
                                }
                                self.done = self.frag.take();
                                return Ok(Msg::Text(self.done.as_deref().unwrap_or_default()));
                            }
                        }
                        0x8 => {
                            let p = &self.buf[h.payload_start..h.payload_end];
                            let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                            // Echo the close as the protocol asks; the socket is done either way.
                            let mut echo = [0u8; 2];
                            echo.copy_from_slice(&code.to_be_bytes());
                            if !self.close_sent {
                                self.close_sent = true;
                                let _ = self.write_frame(0x8, if code == 1005 { &[] } else { &echo }).await;
                            }
                            return Ok(Msg::Close(code));
                        }
                        0x9 => {
                            let payload = self.buf[h.payload_start..h.payload_end].to_vec();
                            self.write_frame(0xA, &payload).await?;
                        }
                        0xA => {}
                        _ => return Err(proto("unknown opcode")),
                    }
                }
                None => self.fill().await?,
            }
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_frame(0x1, payload).await
    }

    /// Sends a close frame and waits (bounded) for the server's close or EOF.
    pub async fn close(mut self, code: u16, wait: Duration) -> io::Result<()> {
        self.close_sent = true;
        self.write_frame(0x8, &code.to_be_bytes()).await?;
        let _ = tokio::time::timeout(wait, async {
            loop {
                match self.next().await {
                    Ok(Msg::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        Ok(())
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        encode_client_frame(&mut out, opcode, payload, self.rng.next_u64() as u32);
        self.stream.write_all(&out).await
    }

    /// Reads more bytes, making room first.
    async fn fill(&mut self) -> io::Result<()> {
        self.compact();
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_BUFFER {
                return Err(proto("frame larger than the client buffer"));
            }
            let new_len = (self.buf.len() * 2).min(MAX_BUFFER);
            self.buf.resize(new_len, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.end += n;
        Ok(())
    }

    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back memory a large frame made us take.
            if self.buf.len() > INITIAL_BUFFER * 4 {
                self.buf.truncate(INITIAL_BUFFER);
                self.buf.shrink_to_fit();
            }
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The head of the next complete frame in the buffer, if there is one.
    fn parse_head(&self) -> io::Result<Option<Head>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut pos) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            l => (u64::from(l), 2),
        };
        if len > MAX_BUFFER as u64 {
            return Err(proto("frame too large"));
        }
        let mask = if masked {
            if b.len() < pos + 4 {
                return Ok(None);
            }
            let m = [b[pos], b[pos + 1], b[pos + 2], b[pos + 3]];
            pos += 4;
            Some(m)
        } else {
            None
        };
        let len = len as usize;
        if b.len() < pos + len {
            return Ok(None);
        }
        Ok(Some(Head { fin, opcode, payload_start: self.start + pos, payload_end: self.start + pos + len, mask }))
    }
}

fn proto(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A masked client frame (FIN set).
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: u32) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let m = mask.to_be_bytes();
    out.extend_from_slice(&m);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status code of an HTTP/1.x response head.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};

    /// The client against the WebSocket library the server uses.
    #[tokio::test]
    async fn talks_to_tungstenite() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
            ws.send(Message::text("hello")).await.unwrap();
            ws.send(Message::text("x".repeat(300))).await.unwrap();
            ws.send(Message::text("y".repeat(70_000))).await.unwrap();
            ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
            ws.send(Message::Frame(Frame::message(b"frag-".to_vec(), OpCode::Data(Data::Text), false))).await.unwrap();
            ws.send(Message::Frame(Frame::message(b"mented".to_vec(), OpCode::Data(Data::Continue), true))).await.unwrap();
            // The client's masked text and its pong to our ping.
            let mut got_pong = false;
            let mut got_text = None;
            while got_text.is_none() || !got_pong {
                match ws.next().await.unwrap().unwrap() {
                    Message::Pong(p) => {
                        assert_eq!(&p[..], b"p1");
                        got_pong = true;
                    }
                    Message::Text(t) => got_text = Some(t.to_string()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(got_text.as_deref(), Some("{\"id\":1}"));
            ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(4005), reason: "slow consumer".into() }))).await.unwrap();
            // The client echoes the close.
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = WsClient::handshake(stream, &addr.to_string(), "/ws?token=t", Duration::from_secs(5)).await.unwrap();
        assert_eq!(c.next().await.unwrap(), Msg::Text(b"hello"));
        assert_eq!(c.next().await.unwrap(), Msg::Text("x".repeat(300).as_bytes()));
        assert_eq!(c.next().await.unwrap(), Msg::Text("y".repeat(70_000).as_bytes()));
        assert_eq!(c.next().await.unwrap(), Msg::Text(b"frag-mented"));
        c.send_text(b"{\"id\":1}").await.unwrap();
        assert_eq!(c.next().await.unwrap(), Msg::Close(4005));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_upgrades_report_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 2048];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n").await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let r = WsClient::handshake(stream, "h", "/ws", Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ConnectError::Status(429))));
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; len];
            let mut out = Vec::new();
            encode_client_frame(&mut out, 0x1, &payload, 0x0102_0304);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0);
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + 4 + len);
            let mask = &out[header..header + 4];
            assert_eq!(mask, [1, 2, 3, 4]);
            assert!(out[header + 4..].iter().enumerate().all(|(i, b)| b ^ mask[i & 3] == b'a'));
        }
    }
}
