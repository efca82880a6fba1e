//! The operations every test server offers: one registry, used by the e2e server, the
//! interop server's WebSocket and TCP peers, and the benchmark's server.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use gotalk::{Connections, Handlers};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Registers the fixture operations on `handlers`:
/// - `echo` (bytes) returns its payload; `stream-echo` streams each part back.
/// - `broadcast` (bytes) sends the notification `broadcast` with the payload to every
///   connection in `everyone`, browser or program, and returns how many it reached. The caller
///   puts connections in `everyone` (from its `on_connect`).
/// - `ask-page` (`{"op", "value"}`) calls the caller back, the way a server asks a page for
///   something, and returns its answer; `stream-to-page` (`{"op", "parts": [...]}`) does the
///   same with a streaming request of one JSON part each, and returns the result's parts.
/// - `sleep` (`{"ms"}`, at most 10 s) returns `{"slept"}` once that time has passed, to hold
///   a request in flight.
pub fn register(handlers: &mut Handlers, everyone: Connections) -> &mut Handlers {
    handlers
        .handle_buffer("echo", |_sock, payload| async move { Ok::<_, String>(payload) })
        .handle("ask-page", |sock, input: AskIn| async move {
            // The caller's answer is ours, and its ErrorResult is ours too: `Error::Remote`
            // displays as the peer's text alone.
            let ask = sock.request::<_, Box<RawValue>>(&input.op, &input.value);
            match tokio::time::timeout(ASK_TIMEOUT, ask).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer to {:?} within {ASK_TIMEOUT:?}", input.op)),
            }
        })
        .handle("stream-to-page", |sock, input: StreamToPageIn| async move {
            // A stream request carries its first part, so there must be one.
            let [first, rest @ ..] = input.parts.as_slice() else {
                return Err("parts is empty: a stream has at least one part".to_owned());
            };
            let exchange = stream_to_page(&sock, &input.op, first, rest);
            match tokio::time::timeout(ASK_TIMEOUT, exchange).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer to {:?} within {ASK_TIMEOUT:?}", input.op)),
            }
        })
        .handle("sleep", |_sock, input: SleepIn| async move {
            let ms = input.ms.min(SLEEP_MAX_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(SleepOut { slept: ms })
        })
        .handle_stream("stream-echo", |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await? {
                output.send(part).await?;
            }
            Ok::<_, gotalk::Error>(())
        })
        .handle_buffer("broadcast", move |_sock, message: Bytes| {
            let socks = everyone.socks();
            async move {
                let sends = socks.iter().map(|s| s.buffer_notify("broadcast", message.clone()));
                let reached = join_all(sends).await.into_iter().filter(Result::is_ok).count();
                Ok::<_, String>(Bytes::from(reached.to_string()))
            }
        })
}

/// `ask-page`'s input: the request to send back to the caller. The value is only forwarded,
/// so it stays JSON text: decoded into values, compact JSON (`[],[],…`) would take many times
/// its size for as long as the page takes to answer.
#[derive(Deserialize)]
struct AskIn {
    op: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
}

/// How long `ask-page` and `stream-to-page` wait for the caller's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// `sleep`'s input and output: how long to wait, in milliseconds.
#[derive(Deserialize)]
struct SleepIn {
    ms: u64,
}

#[derive(Serialize)]
struct SleepOut {
    slept: u64,
}

/// The longest `sleep`, in milliseconds.
const SLEEP_MAX_MS: u64 = 10_000;

/// `stream-to-page`'s input: the caller's streaming operation and the parts to send it.
#[derive(Deserialize)]
struct StreamToPageIn {
    op: String,
    parts: Vec<Box<RawValue>>,
}

/// Sends `first` and `rest` to the caller's streaming operation `op`, one JSON part each, and
/// collects the JSON parts of its result.
async fn stream_to_page(
    sock: &gotalk::Sock,
    op: &str,
    first: &RawValue,
    rest: &[Box<RawValue>],
) -> Result<Vec<Box<RawValue>>, gotalk::Error> {
    let text = |value: &RawValue| Bytes::copy_from_slice(value.get().as_bytes());
    let (mut request, mut response) = sock.stream_request(op, text(first)).await?;
    for part in rest {
        request.write(text(part)).await?;
    }
    request.end().await?;
    let mut answer = Vec::new();
    while let Some(part) = response.next().await? {
        answer.push(serde_json::from_slice(&part)?);
    }
    Ok(answer)
}
