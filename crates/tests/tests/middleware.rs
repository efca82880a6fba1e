//! Layers around ops and what a failing handler shows its peer, over real TCP: streams,
//! notifications and fallbacks inside layers, layers added before their ops, a retry to a
//! peer that cannot take a RetryResult, and a public error with a code that cannot be sent.

mod common;

use bytes::Bytes;
use common::{connect, connect_with, start, within};
use gotalk::middleware::{from_fn, Body, Call, Handler};
use gotalk::{Config, Error, HandlerError, Handlers};
use tokio::sync::mpsc;

/// Refuses every call it wraps with `[denied] <op>`.
fn deny() -> gotalk::middleware::FromFnLayer<
    impl Fn(Call, Handler) -> std::future::Ready<Result<gotalk::middleware::Reply, HandlerError>>
        + Send
        + Sync
        + 'static,
> {
    from_fn(|call: Call, _next: Handler| {
        std::future::ready(Err(HandlerError::public("denied", call.op().to_owned())))
    })
}

fn code(outcome: Result<Bytes, Error>) -> (Option<String>, String) {
    let err = outcome.expect_err("an ErrorResult");
    let remote = err.remote().unwrap_or_else(|| panic!("{err:?}"));
    (remote.code().map(str::to_owned), remote.message().to_owned())
}

#[tokio::test]
async fn a_layer_wraps_streams_by_prefix_and_ops_registered_after_it() {
    let mut handlers = Handlers::new();
    // Before the ops: it wraps them all the same.
    handlers.layer_for("locked.*", deny());
    for op in ["locked.echo", "open.echo"] {
        handlers.handle_stream(op, |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await? {
                output.send(part).await?;
            }
            Ok::<_, HandlerError>(())
        });
    }
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    let (mut tx, mut rx) = client.stream_request("open.echo", "one").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(within("open stream", rx.next()).await.unwrap(), Some(Bytes::from("one")));

    let (_tx, mut rx) = client.stream_request("locked.echo", "one").await.unwrap();
    match within("locked stream", rx.next()).await {
        Err(Error::Remote(text)) => assert_eq!(text, "[denied] locked.echo"),
        other => panic!("{other:?}"),
    }
    // A single request to the stream op goes through the same layer.
    let single = client.buffer_request("locked.echo", "x").await;
    assert_eq!(code(single), (Some("denied".into()), "locked.echo".into()));
}

#[tokio::test]
async fn a_layer_sees_notifications_and_can_drop_them() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let mut handlers = Handlers::new();
    for name in ["note.secret", "note.public"] {
        let seen_tx = seen_tx.clone();
        handlers.handle_buffer_notification(name, move |_sock, payload| {
            let _ = seen_tx.send(String::from_utf8_lossy(&payload).into_owned());
            async {}
        });
    }
    let (layer_tx, mut layered) = mpsc::unbounded_channel::<String>();
    handlers.layer(from_fn(move |call: Call, next: Handler| {
        let _ = layer_tx.send(call.op().to_owned());
        let is_note = matches!(call.body(), Body::Notification(_));
        async move {
            if is_note && call.op() == "note.secret" {
                return Err(HandlerError::public("denied", "no"));
            }
            next.run(call).await
        }
    }));
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    client.buffer_notify("note.secret", "hidden").await.unwrap();
    client.buffer_notify("note.public", "shown").await.unwrap();

    assert_eq!(within("layer", layered.recv()).await.as_deref(), Some("note.secret"));
    assert_eq!(within("layer", layered.recv()).await.as_deref(), Some("note.public"));
    // Notifications are handled in order, so the refused one would have come first.
    assert_eq!(within("handler", seen.recv()).await.as_deref(), Some("shown"));
}

#[tokio::test]
async fn a_prefix_layer_on_the_fallback_is_chosen_by_the_op_called() {
    let mut handlers = Handlers::new();
    handlers
        .fallback_buffer(|_sock, op, _payload| async move {
            Ok::<_, HandlerError>(Bytes::from(format!("fallback {op}")))
        })
        .layer_for("admin.*", deny());
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    assert_eq!(&client.buffer_request("user.x", "").await.unwrap()[..], b"fallback user.x");
    let admin = client.buffer_request("admin.x", "").await;
    assert_eq!(code(admin), (Some("denied".into()), "admin.x".into()));
}

#[tokio::test]
async fn a_retry_is_an_error_result_for_a_peer_that_cannot_retry() {
    let mut handlers = Handlers::new();
    handlers.handle_buffer("busy", |_sock, _payload| async move {
        Err::<Bytes, _>(HandlerError::retry("too busy"))
    });
    // As Go and gotalk.js are: no RetryResult.
    let server = start(handlers.clone(), Config::default().peer_understands_retry(false)).await;
    let client = connect(server.addr).await;
    match client.buffer_request("busy", "").await {
        Err(Error::Remote(text)) => assert_eq!(text, "too busy"),
        other => panic!("{other:?}"),
    }

    let retrying = start(handlers, Config::default()).await;
    let config = Config::default().max_retries(0);
    let client = connect_with(retrying.addr, Handlers::new(), config).await;
    match client.buffer_request("busy", "").await {
        Err(Error::Retry { message, .. }) => assert_eq!(message, "too busy"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn errors_the_handler_did_not_make_public_are_references() {
    let mut handlers = Handlers::new();
    handlers
        // A code the format cannot carry is a bug of the handler's: not sent as is.
        .handle_buffer("bad-code", |_sock, _payload| async move {
            Err::<Bytes, _>(HandlerError::public("Not Found", "secret detail"))
        })
        // A String is internal too: it is so often `e.to_string()`.
        .handle_buffer("string", |_sock, _payload| async move {
            Err::<Bytes, _>(format!("db at {} said no", "10.0.0.5"))
        })
        .handle_buffer("public", |_sock, _payload| async move {
            Err::<Bytes, _>(HandlerError::public("not_found", "[x] y"))
        });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    for op in ["bad-code", "string"] {
        let (code, message) = code(client.buffer_request(op, "").await);
        assert_eq!(code.as_deref(), Some("internal"), "{op}");
        assert!(message.starts_with("internal error (ref "), "{op}: {message}");
        assert!(!message.contains("secret") && !message.contains("10.0.0.5"), "{message}");
    }
    // A message may itself begin with brackets; the code is read once.
    let public = client.buffer_request("public", "").await;
    assert_eq!(code(public), (Some("not_found".into()), "[x] y".into()));
}
