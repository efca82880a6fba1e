//! The WebSocket framing bridge: WebSocket frames or messages in, the gotalk byte stream out,
//! into a real sock.

use std::sync::Arc;

use bytes::Bytes;
use gotalk::{Config, Sock};
use gotalk::{ConnInfo, TransportKind};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::runtime::run;
use crate::sock::{config, server_handlers};

/// The first byte picks the mode, the rest is the input:
/// - even: raw bytes on the wire of the gateway's side of a WebSocket (its own framing
///   parses them, masked as a client's must be), into a sock;
/// - odd: a sequence of messages, each a kind byte, a length byte and that many bytes, fed
///   straight to the message-stream reader our client uses, then the end of the stream.
///
/// Checks that nothing panics and that the sock closes once the messages end.
pub fn ws_bridge(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let rest = rest.to_vec();
    if mode & 1 == 0 {
        run("ws_bridge (raw)", raw(rest));
    } else {
        run("ws_bridge (messages)", messages(rest));
    }
}

async fn raw(wire: Vec<u8>) {
    let config = config();
    let (ours, mut theirs) = tokio::io::duplex(16 * 1024);
    let (r, w) = gotalk::ws::server(ours, &config);
    let peer = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(&mut theirs);
        let drain = async {
            let _ = tokio::io::copy(&mut rd, &mut tokio::io::sink()).await;
        };
        let write = async {
            let _ = wr.write_all(&wire).await;
            let _ = wr.shutdown().await;
        };
        tokio::join!(drain, write);
    });
    start_and_close(r, w, config).await;
    let _ = peer.await;
}

async fn messages(input: Vec<u8>) {
    let mut messages = Vec::new();
    let mut rest = &input[..];
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, after) = tail.split_at(n);
        rest = after;
        let body = Bytes::copy_from_slice(body);
        messages.push(match kind % 5 {
            0 => Message::Binary(body),
            1 => Message::Text(String::from_utf8_lossy(&body).into_owned().into()),
            2 => Message::Ping(body),
            3 => Message::Pong(body),
            _ => Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: String::from_utf8_lossy(&body).into_owned().into(),
            })),
        });
    }
    let stream = futures_util::stream::iter(messages.into_iter().map(Ok::<_, tungstenite::Error>));
    let (r, w) = gotalk::ws::pair::<_, _, Message>(stream, futures_util::sink::drain());
    start_and_close(r, w, config()).await;
}

/// Starts a sock over the transport and waits for it to close (the input has ended).
async fn start_and_close(
    r: impl gotalk::transport::FrameReader,
    w: impl gotalk::transport::FrameWriter,
    config: Config,
) {
    let info = ConnInfo::new(TransportKind::WebSocket, None, None);
    let started = Sock::start(r, w, Arc::new(server_handlers()), Arc::new(config), info);
    if let Ok(sock) = started.await {
        sock.closed().await;
    }
}
