//! A lean SSE client: one socket, the chunked decoder, and an event parser
//! that hands out `event`, `data` and the last `id` without copying data.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{ChunkDecoder, Head, find};
use crate::ws::ConnectError;

const READ_CHUNK: usize = 16 * 1024;
const MAX_PENDING: usize = 4 * 1024 * 1024;

pub struct SseClient {
    stream: TcpStream,
    raw: Vec<u8>,
    chunked: Option<ChunkDecoder>,
    /// Decoded body bytes not yet parsed into events.
    body: Vec<u8>,
    pos: usize,
    /// The last `id:` received (what a browser would send as `Last-Event-ID`).
    pub last_id: Option<String>,
}

/// One event, borrowed from the client's buffer.
#[derive(Debug)]
pub struct SseEvent<'a> {
    pub event: &'a str,
    pub data: &'a [u8],
    /// The stream's last event id after this event.
    pub last_id: Option<&'a str>,
}

impl SseClient {
    /// Sends the GET and reads the response head; only 200 opens a stream.
    pub async fn open(mut stream: TcpStream, host: &str, path: &str, token: &str, last_event_id: Option<&str>, timeout: Duration) -> Result<Self, ConnectError> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n");
        if let Some(id) = last_event_id {
            req.push_str("Last-Event-ID: ");
            req.push_str(id);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let work = async {
            stream.write_all(req.as_bytes()).await?;
            let mut raw = Vec::with_capacity(READ_CHUNK);
            let head_end = loop {
                if let Some(i) = find(&raw, b"\r\n\r\n") {
                    break i;
                }
                if raw.len() > 64 * 1024 {
                    return Err(ConnectError::Protocol("oversize response head"));
                }
                raw.reserve(READ_CHUNK);
                if stream.read_buf(&mut raw).await? == 0 {
                    return Err(ConnectError::Protocol("closed before the response head"));
                }
            };
            let head = Head::parse(&raw[..head_end]).ok_or(ConnectError::Protocol("bad response head"))?;
            if head.status != 200 {
                return Err(ConnectError::Status(head.status));
            }
            raw.drain(..head_end + 4);
            let mut c = SseClient { stream, raw: Vec::new(), chunked: head.chunked.then(ChunkDecoder::default), body: Vec::new(), pos: 0, last_id: None };
            c.absorb(&raw).map_err(|_| ConnectError::Protocol("bad chunked body"))?;
            Ok(c)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    /// The next event; comments and `retry:` are skipped, `id:` is remembered.
    pub async fn next(&mut self) -> io::Result<SseEvent<'_>> {
        loop {
            if let Some((ev, data)) = self.parse_event() {
                let event = std::str::from_utf8(&self.body[ev.0..ev.1]).unwrap_or("");
                return Ok(SseEvent { event, data: &self.body[data.0..data.1], last_id: self.last_id.as_deref() });
            }
            self.fill().await?;
        }
    }

    /// Finds the next complete event in `body`; returns ranges of its event
    /// name and data. Blocks without data (comments, `retry:`) are consumed.
    fn parse_event(&mut self) -> Option<((usize, usize), (usize, usize))> {
        loop {
            let rest = &self.body[self.pos..];
            let end = find(rest, b"\n\n")?;
            let block_start = self.pos;
            let block_end = self.pos + end;
            self.pos = block_end + 2;
            let mut event = (0, 0);
            let mut data = None;
            let mut line_start = block_start;
            while line_start < block_end {
                let line_end = self.body[line_start..block_end].iter().position(|b| *b == b'\n').map_or(block_end, |i| line_start + i);
                let line = &self.body[line_start..line_end];
                let (field, value_off) = match line.iter().position(|b| *b == b':') {
                    Some(0) => (&b""[..], line.len()),
                    Some(i) => (&line[..i], if line.get(i + 1) == Some(&b' ') { i + 2 } else { i + 1 }),
                    None => (line, line.len()),
                };
                let value = (line_start + value_off, line_end);
                match field {
                    b"event" => event = value,
                    // The server writes one data line per event (JSON has no raw newlines).
                    b"data" => data = Some(value),
                    b"id" => self.last_id = std::str::from_utf8(&self.body[value.0..value.1]).ok().map(str::to_owned),
                    _ => {}
                }
                line_start = line_end + 1;
            }
            if let Some(data) = data {
                if event == (0, 0) {
                    // Unnamed events are "message" in SSE; ours are always named.
                    event = (data.0, data.0);
                }
                return Some((event, data));
            }
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        // Drop parsed bytes before reading more.
        if self.pos > 0 {
            self.body.drain(..self.pos);
            self.pos = 0;
        }
        if self.chunked.as_ref().is_some_and(ChunkDecoder::is_done) {
            // The body ended; the connection may stay open for keep-alive.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
        }
        if self.body.len() > MAX_PENDING {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "SSE event larger than the client buffer"));
        }
        self.raw.clear();
        self.raw.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.raw).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
        }
        let raw = std::mem::take(&mut self.raw);
        let r = self.absorb(&raw);
        self.raw = raw;
        r
    }

    fn absorb(&mut self, raw: &[u8]) -> io::Result<()> {
        match &mut self.chunked {
            Some(dec) => {
                let mut input = raw;
                while !input.is_empty() && !dec.is_done() {
                    let used = dec.feed(input, &mut self.body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if used == 0 {
                        break;
                    }
                    input = &input[used..];
                }
            }
            None => self.body.extend_from_slice(raw),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reads_events_ids_and_skips_comments_over_chunked_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).await.unwrap();
            let req = String::from_utf8_lossy(&req[..n]).to_string();
            assert!(req.contains("Authorization: Bearer tok"));
            assert!(req.contains("Last-Event-ID: user:a=E:3"));
            let body = "retry: 1000\n\nid: user:a=E:3\nevent: connected\ndata: {\"type\":\"connected\"}\n\n: keep-alive\n\nid: user:a=E:4\nevent: publication\ndata: {\"offset\":4}\n\n";
            let mut out = String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            // Split the body over chunks at awkward places.
            for piece in [&body[..5], &body[5..40], &body[40..]] {
                out.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
            }
            s.write_all(out.as_bytes()).await.unwrap();
            s.write_all(b"0\r\n\r\n").await.unwrap();
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = SseClient::open(stream, "h", "/sse?channel=user:a", "tok", Some("user:a=E:3"), Duration::from_secs(5)).await.unwrap();
        let e = c.next().await.unwrap();
        assert_eq!(e.event, "connected");
        let e = c.next().await.unwrap();
        assert_eq!((e.event, e.data), ("publication", &b"{\"offset\":4}"[..]));
        assert_eq!(c.last_id.as_deref(), Some("user:a=E:4"));
        assert!(c.next().await.is_err());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_streams_report_their_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}").await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let r = SseClient::open(stream, "h", "/sse", "bad", None, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ConnectError::Status(401))));
    }
}
