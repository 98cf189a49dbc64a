//! Accepted TCP connections as the server wants them: `TCP_NODELAY` on, and
//! a WebSocket handshake response that can wait for the first frame so both
//! leave in one segment.
//!
//! Every upgrade with a token is answered by a `101` and, at once, the
//! `connected` push. Written apart they cost two sends, two loopback
//! deliveries and two wake-ups of the client: about a tenth of the CPU of
//! a connection.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The server's listener (for `axum::serve`).
pub struct Listener(TcpListener);

impl Listener {
    pub fn new(tcp: TcpListener) -> Self {
        Self(tcp)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // axum's own accept loop: retries, and backs off when out of descriptors.
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // A reply written right after a push on the same socket (a
        // `send_message` reply after its own `message_created`) would
        // otherwise wait for the client's delayed ACK (~40 ms) under Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        (
            Conn {
                tcp,
                hold: Arc::new(AtomicBool::new(false)),
                held: Vec::new(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What a request knows about its connection (as `ConnectInfo<Peer>`).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    hold: Arc<AtomicBool>,
}

impl Peer {
    /// Keeps the response about to be written (a `101`) in memory until the
    /// next write on the connection, which carries both. Only for a response
    /// that is certainly followed by a frame at once.
    pub fn hold_response(&self) {
        self.hold.store(true, Ordering::Relaxed);
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            hold: stream.io().hold.clone(),
        }
    }
}

/// One accepted connection.
pub struct Conn {
    tcp: TcpStream,
    /// Set by [`Peer::hold_response`]: the next write is kept in `held`.
    hold: Arc<AtomicBool>,
    /// Bytes written by the server but not yet sent; empty almost always.
    held: Vec<u8>,
}

impl Conn {
    /// Sends what is held, alone. `Ready(Ok)` once nothing is held.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held.is_empty() {
            if this.hold.load(Ordering::Relaxed) && !buf.is_empty() {
                this.hold.store(false, Ordering::Relaxed);
                this.held.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        // The held response and this write in one send.
        loop {
            let pending = this.held.len();
            let n = ready!(
                Pin::new(&mut this.tcp)
                    .poll_write_vectored(cx, &[IoSlice::new(&this.held), IoSlice::new(buf)])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < pending {
                this.held.drain(..n);
                continue;
            }
            this.held = Vec::new();
            if n > pending {
                return Poll::Ready(Ok(n - pending));
            }
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held.is_empty() && !this.hold.load(Ordering::Relaxed) {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        }
        if this.held.is_empty() {
            // The response being held arrives in pieces: keep them all.
            this.hold.store(false, Ordering::Relaxed);
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => self.poll_write(cx, first),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    /// A flush does not send what is held: the frame that follows will.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_release(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Last chance for a held response whose frame never came (a task
        // that failed in between): best effort, never blocks.
        if !self.held.is_empty() {
            let _ = self.tcp.try_write(&self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An accepted connection (through [`Listener`]) and the client's end.
    async fn pair() -> (Conn, TcpStream) {
        let mut listener = Listener::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let (client, (conn, _)) = tokio::join!(TcpStream::connect(addr), axum::serve::Listener::accept(&mut listener));
        (conn, client.unwrap())
    }

    fn nothing_arrived(client: &TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(client.try_read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[tokio::test]
    async fn a_held_response_leaves_in_one_send_with_the_next_write() {
        let (mut conn, mut client) = pair().await;
        assert!(conn.tcp.nodelay().unwrap());
        conn.hold.store(true, Ordering::Relaxed);
        // hyper writes a response head as several slices.
        let head = [IoSlice::new(b"HTTP/1.1 101 "), IoSlice::new(b"Switching Protocols\r\n\r\n")];
        assert_eq!(conn.write_vectored(&head).await.unwrap(), 36);
        conn.flush().await.unwrap();
        // Loopback delivers within the send: had it been sent, it would be here.
        assert!(nothing_arrived(&client));
        conn.write_all(b"first frame").await.unwrap();
        let mut buf = [0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 101 Switching Protocols\r\n\r\nfirst frame");
        // Later writes go straight out.
        conn.write_all(b"second").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"second");
    }

    #[tokio::test]
    async fn without_a_hold_every_write_goes_out_at_once() {
        let (mut conn, mut client) = pair().await;
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn what_is_held_is_sent_at_shutdown_or_when_dropped() {
        let (mut conn, mut client) = pair().await;
        conn.hold.store(true, Ordering::Relaxed);
        conn.write_all(b"held").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"held");

        let (mut conn, mut client) = pair().await;
        conn.hold.store(true, Ordering::Relaxed);
        conn.write_all(b"held too").await.unwrap();
        drop(conn);
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"held too");
    }
}
