//! The end of a server-side WebSocket (client connections and the admin
//! firehose alike): the close frame, then lingering until the client
//! answers it.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use chorus_protocol::CloseCode;
use futures_util::{Sink, SinkExt, Stream, StreamExt};

/// How long a close frame may take to reach the client.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long, after our close frame, we read and discard what the client
/// still sends. Dropping a socket with unread input resets it, and the reset
/// can destroy frames the client has not read yet (the close reason among them).
const LINGER: Duration = Duration::from_secs(2);
/// Frames discarded while lingering before the socket is dropped anyway.
const LINGER_FRAMES: usize = 1024;

/// Sends the close frame for `code`, waiting at most [`CLOSE_GRACE`]; true if it went out.
pub(crate) async fn send_close<S: Sink<Message> + Unpin>(sink: &mut S, code: CloseCode) -> bool {
    let frame = CloseFrame { code: code.code(), reason: Utf8Bytes::from_static(code.reason()) };
    matches!(tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await, Ok(Ok(())))
}

/// Reads until the client answers our close frame (or gives up), so the
/// socket is closed cleanly instead of reset. Bounded in time and frames.
pub(crate) async fn linger<R, E>(stream: &mut R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let drain = async {
        for _ in 0..LINGER_FRAMES {
            match stream.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
