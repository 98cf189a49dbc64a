//! A minimal HTTP/1.1 keep-alive client for the publish API, health and
//! metrics, and the chunked-body decoder the SSE client shares.
//!
//! Hand-written so that a publisher stamps each batch immediately before the
//! bytes are written, on a connection it owns (per-channel order is kept by
//! sending one request at a time per connection).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{Target, connect_tcp};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection; reconnects on the next request after an error.
pub struct HttpConn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    pub timeout: Duration,
    pub reconnects: u64,
}

impl HttpConn {
    pub fn new(target: Target) -> Self {
        Self { target, stream: None, buf: Vec::with_capacity(8192), timeout: Duration::from_secs(30), reconnects: 0 }
    }

    /// Sends one request and reads its whole response. `head_extra` is a block
    /// of `Name: value\r\n` lines.
    pub async fn request(&mut self, method: &str, path: &str, head_extra: &str, body: &[u8]) -> anyhow::Result<Response> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.request_inner(method, path, head_extra, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                bail!("{method} {path}: no response within {timeout:?}")
            }
        }
    }

    async fn request_inner(&mut self, method: &str, path: &str, head_extra: &str, body: &[u8]) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            let s = connect_tcp(&self.target, self.target.addr.ip()).await.context("connecting")?;
            self.stream = Some(s);
            self.reconnects += 1;
            self.buf.clear();
        }
        let stream = self.stream.as_mut().context("no connection")?;
        let mut req = Vec::with_capacity(256 + body.len());
        req.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{head_extra}\r\n", self.target.host, body.len()).as_bytes(),
        );
        req.extend_from_slice(body);
        stream.write_all(&req).await.context("writing the request")?;
        let (status, close, body) = read_response(stream, &mut self.buf).await?;
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

/// Reads one response (head and body) from `stream`; `buf` keeps bytes read
/// past its end. Returns status, whether the server will close, and the body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, bool, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            bail!("response head too large");
        }
        read_more(stream, buf).await?;
    };
    let head = Head::parse(&buf[..head_end]).context("bad response head")?;
    buf.drain(..head_end + 4);
    let body = if let Some(len) = head.content_length {
        if len > MAX_BODY {
            bail!("response body too large");
        }
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        buf.drain(..len).collect()
    } else if head.chunked {
        let mut dec = ChunkDecoder::default();
        let mut out = Vec::new();
        loop {
            let used = dec.feed(buf, &mut out).map_err(|e| anyhow::anyhow!(e))?;
            buf.drain(..used);
            if dec.is_done() {
                break;
            }
            if out.len() > MAX_BODY {
                bail!("response body too large");
            }
            read_more(stream, buf).await?;
        }
        out
    } else if head.status == 204 || head.status == 304 {
        Vec::new()
    } else {
        // Body until the server closes.
        loop {
            match stream.read_buf(buf).await {
                Ok(0) => break,
                Ok(_) if buf.len() > MAX_BODY => bail!("response body too large"),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok((head.status, true, std::mem::take(buf)));
    };
    Ok((head.status, head.close, body))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.reserve(8192);
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        bail!("connection closed by the server");
    }
    Ok(())
}

/// The parts of a response head this client needs.
#[derive(Debug, Default)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
}

impl Head {
    pub fn parse(head: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut h = Head { status: crate::ws::parse_status(lines.next()?.as_bytes())?, ..Head::default() };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                h.content_length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                h.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                h.close = value.eq_ignore_ascii_case("close");
            }
        }
        Some(h)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    size: u64,
    saw_digit: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Chunk extensions up to the end of the size line.
    SizeLine,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
    Done,
}

impl ChunkDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as possible, appending data to `out`.
    /// Returns how many input bytes were used.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size.checked_mul(16).and_then(|s| s.checked_add(d)).ok_or("chunk size overflow")?;
                        self.saw_digit = true;
                        i += 1;
                    }
                    b';' | b' ' | b'\t' | b'\r' if self.saw_digit => {
                        self.state = ChunkState::SizeLine;
                    }
                    b'\n' if self.saw_digit => self.state = ChunkState::SizeLine,
                    _ => return Err("bad chunk size"),
                },
                ChunkState::SizeLine => {
                    i += 1;
                    if b == b'\n' {
                        self.saw_digit = false;
                        self.state = if self.size == 0 { ChunkState::TrailerLineStart } else { ChunkState::Data };
                    }
                }
                ChunkState::Data => {
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    i += 1;
                    self.state = match b {
                        b'\r' => ChunkState::DataLf,
                        b'\n' => ChunkState::Size,
                        _ => return Err("missing CRLF after chunk"),
                    };
                }
                ChunkState::DataLf => {
                    i += 1;
                    if b != b'\n' {
                        return Err("missing LF after chunk");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerLineStart => {
                    i += 1;
                    self.state = match b {
                        b'\r' => ChunkState::TrailerEndLf,
                        b'\n' => ChunkState::Done,
                        _ => ChunkState::TrailerLine,
                    };
                }
                ChunkState::TrailerLine => {
                    i += 1;
                    if b == b'\n' {
                        self.state = ChunkState::TrailerLineStart;
                    }
                }
                ChunkState::TrailerEndLf => {
                    i += 1;
                    if b != b'\n' {
                        return Err("bad end of chunked body");
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => break,
            }
        }
        Ok(i)
    }
}

/// A GET whose body is parsed as JSON.
pub async fn get_json(conn: &mut HttpConn, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = conn.request("GET", path, "", b"").await?;
    let v = serde_json::from_slice(&r.body).with_context(|| format!("GET {path}: body is not JSON"))?;
    Ok((r.status, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding_in_pieces() {
        let body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        // Byte by byte and all at once give the same result.
        for step in [1usize, 3, 7, body.len()] {
            let mut dec = ChunkDecoder::default();
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < body.len() {
                let end = (pos + step).min(body.len());
                let mut piece = &body[pos..end];
                while !piece.is_empty() {
                    let used = dec.feed(piece, &mut out).unwrap();
                    if used == 0 {
                        break;
                    }
                    piece = &piece[used..];
                    pos += used;
                }
                if dec.is_done() {
                    break;
                }
            }
            assert!(dec.is_done(), "step {step}");
            assert_eq!(out, b"Wikipedia in \r\n\r\nchunks.");
        }
        let mut dec = ChunkDecoder::default();
        assert!(dec.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn response_heads() {
        let h = Head::parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 12\r\nConnection: close").unwrap();
        assert_eq!((h.status, h.content_length, h.chunked, h.close), (200, Some(12), false, true));
        let h = Head::parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").unwrap();
        assert!(h.chunked);
        assert!(Head::parse(b"garbage").is_none());
    }

    #[tokio::test]
    async fn keep_alive_requests_against_a_local_server() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            for reply in [
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
                "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_owned(),
            ] {
                loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            buf.drain(..i + 4 + len);
                            break;
                        }
                    }
                    let mut b = [0u8; 1024];
                    let n = s.read(&mut b).await.unwrap();
                    buf.extend_from_slice(&b[..n]);
                }
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let mut c = HttpConn::new(Target::parse(&format!("http://{addr}")).unwrap());
        let r = c.request("POST", "/a", "X-API-Key: k\r\n", b"{}").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = c.request("GET", "/b", "", b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"abc"[..]));
        assert_eq!(c.reconnects, 1);
        server.await.unwrap();
    }
}
