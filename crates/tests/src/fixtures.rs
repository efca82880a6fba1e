//! The operations every test server offers, in one registry: the integration tests' servers,
//! the interop server (`gotalk-interop`), the e2e server (`gotalk-e2e`) and the benchmark's
//! server all serve these, so a test written against one holds against the others.
//!
//! | op | takes | does |
//! |----|-------|------|
//! | `echo` | bytes | returns them |
//! | `echo-json` | JSON | returns it, re-encoded |
//! | `greet` | `{"name"}` | returns `{"greeting": "Hello <name>"}` |
//! | `empty` | anything | returns an empty result |
//! | `fail` | anything | fails with `intentional failure` |
//! | `fail-public` | anything | fails with the public error `[not_found] no such thing` |
//! | `fail-internal` | anything | fails with an internal error: `[internal] internal error (ref …)`, the real one logged |
//! | `panic` | a JSON string, or anything | panics with that string, or `intentional panic`; `""` returns `""` |
//! | `sleep` | ms, or `{"ms"}` | returns the same number, or `{"slept"}`, after that long (at most 10 s) |
//! | `never` | anything | never answers |
//! | `notify-me` | bytes | notifies `notified` with them, then returns an empty result |
//! | `reverse-echo` | bytes | calls the caller's `client-echo` with them and returns its answer |
//! | `ask-page` | `{"op", "value"}` | calls the caller's `op` with `value` and returns its answer |
//! | `stream-to-page` | `{"op", "parts"}` | streams `parts` to the caller's `op`, returns its result's parts |
//! | `close-me` | `0`–`3`, or anything | closes the connection with that protocol error, or plainly |
//! | `end-me` | anything | ends the connection gracefully, as a server shutting down does |
//! | `broadcast` | bytes | notifies `broadcast` with them to everyone, returns how many it reached |
//! | `stream-echo` | a stream | streams each part back |
//! | `stream-fail` | a stream | streams its first part back, then fails with `intentional stream failure` |
//! | `echo-note` | a notification | notifies `echo-note-reply` with its payload |
//!
//! Hooks (`on_connect` and the like) are the servers' own: tests set their own, and a hook
//! here would replace or be replaced by theirs.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use gotalk::protocol::ProtocolErrorCode;
use gotalk::{Connections, HandlerError, Handlers};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A registry of the fixture operations whose `broadcast` reaches no one: nothing puts a
/// connection in its set. Servers that broadcast use [`register`].
pub fn handlers() -> Handlers {
    let mut handlers = Handlers::new();
    register(&mut handlers, Connections::default());
    handlers
}

/// Registers the fixture operations on `handlers`. `broadcast` reaches the connections in
/// `everyone`, which the caller fills (from its `on_connect`).
pub fn register(handlers: &mut Handlers, everyone: Connections) -> &mut Handlers {
    handlers
        .handle_buffer("echo", |_sock, payload| async move { Ok::<_, String>(payload) })
        .handle("echo-json", |_sock, value: Value| async move { Ok::<_, String>(value) })
        .handle("greet", |_sock, input: GreetIn| async move {
            Ok::<_, String>(GreetOut { greeting: format!("Hello {}", input.name) })
        })
        .handle_buffer("empty", |_sock, _payload| async move { Ok::<_, String>(Bytes::new()) })
        // Bytes, not JSON: peers send it nothing, `null`, or whatever a command line gives.
        .handle_buffer("fail", |_sock, _payload| async move {
            Err::<Bytes, _>(text("intentional failure"))
        })
        .handle_buffer("fail-public", |_sock, _payload| async move {
            Err::<Bytes, _>(HandlerError::public("not_found", "no such thing"))
        })
        .handle_buffer("fail-internal", |_sock, _payload| async move {
            // What `?` on a failing database call makes: the peer must not read this.
            let secret: std::io::Error = std::io::Error::other("db password rejected for admin");
            Err::<Bytes, _>(secret)
        })
        .handle_buffer("panic", |_sock, payload| async move {
            match serde_json::from_slice::<String>(&payload) {
                // The path that does not panic, so a test can see the same handler answer.
                Ok(message) if message.is_empty() => Ok::<_, String>(Bytes::from_static(b"\"\"")),
                Ok(message) => panic!("{message}"),
                Err(_) => panic!("intentional panic"),
            }
        })
        .handle("sleep", |_sock, input: SleepIn| async move {
            let ms = input.ms().min(SLEEP_MAX_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(input.answer(ms))
        })
        .handle_buffer("never", |_sock, _payload| async move {
            std::future::pending::<()>().await;
            Ok::<_, String>(Bytes::new())
        })
        .handle_buffer("notify-me", |sock, payload| async move {
            sock.buffer_notify("notified", payload).await.map_err(text)?;
            Ok::<_, HandlerError>(Bytes::new())
        })
        .handle_buffer("reverse-echo", |sock, payload| async move {
            sock.buffer_request("client-echo", payload).await.map_err(text)
        })
        .handle("ask-page", |sock, input: AskIn| async move {
            // The caller's answer is ours, and its ErrorResult is ours too: `Error::Remote`
            // displays as the peer's text alone.
            let ask = sock.request::<_, Box<RawValue>>(&input.op, &input.value);
            match tokio::time::timeout(ASK_TIMEOUT, ask).await {
                Ok(answer) => answer.map_err(text),
                Err(_) => Err(text(format!("no answer to {:?} within {ASK_TIMEOUT:?}", input.op))),
            }
        })
        .handle("stream-to-page", |sock, input: StreamToPageIn| async move {
            // A stream request carries its first part, so there must be one.
            let [first, rest @ ..] = input.parts.as_slice() else {
                return Err(text("parts is empty: a stream has at least one part"));
            };
            let exchange = stream_to_page(&sock, &input.op, first, rest);
            match tokio::time::timeout(ASK_TIMEOUT, exchange).await {
                Ok(answer) => answer.map_err(text),
                Err(_) => Err(text(format!("no answer to {:?} within {ASK_TIMEOUT:?}", input.op))),
            }
        })
        .handle_buffer("close-me", |sock, payload| async move {
            let code =
                std::str::from_utf8(&payload).ok().and_then(|s| s.trim().parse::<u32>().ok());
            // After the answer is written.
            tokio::spawn(async move {
                tokio::time::sleep(AFTER_ANSWER).await;
                match code.filter(|c| *c <= 3) {
                    Some(code) => sock.close_with_error(ProtocolErrorCode::from_u32(code)),
                    None => sock.close(),
                }
            });
            Ok::<_, String>(Bytes::new())
        })
        .handle_buffer("end-me", |sock, _payload| async move {
            // After the answer is written: ending waits for the requests in flight, this one
            // too.
            tokio::spawn(async move {
                tokio::time::sleep(AFTER_ANSWER).await;
                sock.end().await;
            });
            Ok::<_, String>(Bytes::new())
        })
        .handle_buffer("broadcast", move |_sock, message: Bytes| {
            let socks = everyone.socks();
            async move {
                let sends = socks.iter().map(|s| s.buffer_notify("broadcast", message.clone()));
                let reached = join_all(sends).await.into_iter().filter(Result::is_ok).count();
                Ok::<_, String>(Bytes::from(reached.to_string()))
            }
        })
        .handle_stream("stream-echo", |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await.map_err(text)? {
                output.send(part).await.map_err(text)?;
            }
            Ok::<_, HandlerError>(())
        })
        .handle_stream("stream-fail", |_sock, mut input, mut output| async move {
            if let Some(part) = input.next().await.map_err(text)? {
                output.send(part).await.map_err(text)?;
            }
            Err::<(), _>(text("intentional stream failure"))
        })
        .handle_buffer_notification("echo-note", |sock, payload| async move {
            let _ = sock.buffer_notify("echo-note-reply", payload).await;
        })
}

/// Text the peer reads word for word: the fixtures' errors are what tests compare.
fn text(error: impl ToString) -> HandlerError {
    HandlerError::text(error.to_string())
}

#[derive(Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize)]
struct GreetOut {
    greeting: String,
}

/// `sleep`'s input, in both shapes its callers send: the interop checklists a bare number,
/// the browser tests and the benchmark `{"ms"}`. Each gets its answer in the shape it sent.
#[derive(Deserialize)]
#[serde(untagged)]
enum SleepIn {
    Ms(u64),
    Object { ms: u64 },
}

#[derive(Serialize)]
#[serde(untagged)]
enum SleepOut {
    Ms(u64),
    Object { slept: u64 },
}

impl SleepIn {
    fn ms(&self) -> u64 {
        match *self {
            SleepIn::Ms(ms) | SleepIn::Object { ms } => ms,
        }
    }

    fn answer(&self, slept: u64) -> SleepOut {
        match self {
            SleepIn::Ms(_) => SleepOut::Ms(slept),
            SleepIn::Object { .. } => SleepOut::Object { slept },
        }
    }
}

/// The longest `sleep`, in milliseconds: the e2e server is reachable by whoever can reach its
/// port.
const SLEEP_MAX_MS: u64 = 10_000;

/// How long `close-me` and `end-me` wait before acting, so their answer goes out first.
const AFTER_ANSWER: Duration = Duration::from_millis(50);

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
