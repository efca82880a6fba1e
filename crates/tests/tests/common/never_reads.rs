//! Peers that ask for a lot and never read a byte of it, so the server's writes to them
//! stall: over TCP and over WebSocket.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use super::raw_ws::{RawWs, BINARY};

/// How many `echo` requests each peer sends, and how large: more than the kernel's socket
/// buffers (a few MiB at most) and the server's send queue (4 MiB) hold together.
const REQUESTS: usize = 16;
const PAYLOAD: usize = 1 << 20;

/// A TCP connection with a small receive buffer, so little of what the server sends fits.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// `echo` requests of [`PAYLOAD`] bytes, each as its own gotalk message.
fn echo_requests() -> impl Iterator<Item = Vec<u8>> {
    (0..REQUESTS).map(|i| {
        let mut frame = format!("r{i:04}004echo{PAYLOAD:08x}").into_bytes();
        frame.resize(frame.len() + PAYLOAD, b'x');
        frame
    })
}

/// A gotalk peer over TCP at `addr` that asks for 16 MiB of echoes and never reads. The
/// task keeps the socket open until aborted (its writes may themselves stall).
pub(crate) fn tcp(addr: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = small_window(addr).await;
        if stream.write_all(b"01").await.is_err() {
            return;
        }
        for request in echo_requests() {
            if stream.write_all(&request).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// The same over a WebSocket to the gateway at `http` (mounted at `/gotalk/`): each gotalk
/// message in a binary message of its own.
pub(crate) fn websocket(http: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stream = small_window(http).await;
        let Ok(mut ws) = RawWs::upgrade(stream, "/gotalk/", "localhost", &[]).await else {
            panic!("the upgrade is refused");
        };
        ws.gotalk_handshake().await;
        for request in echo_requests() {
            if ws.io.write_all(&masked_with_zeros(&request)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// A binary WebSocket frame as a client must send it, masked, but with the all-zero key: the
/// payload goes as it is (masking a MiB byte by byte is slow in a debug build).
fn masked_with_zeros(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | BINARY, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}
