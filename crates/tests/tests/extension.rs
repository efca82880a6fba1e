//! The core's extension point, with an extension of the test's own: it attaches to every
//! connection before the `on_connect` hook and detaches before `on_close`, keeps its state
//! with the connection, answers the names it claims ahead of the handlers, learns when the
//! peer turns out to be one of ours, and closes with a reason of its own.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{connect, notification, request, start, within, WirePeer, HELLO};
use gotalk::protocol::{Frame, Id};
use gotalk::{Answer, CloseReason, Config, Error, Extension, Handlers, Sock};

type Log = Arc<Mutex<Vec<String>>>;

/// What the extension keeps with each connection.
struct Seen(u64);

/// Logs every hook, claims `$tally`, `who`, `$busy` and `$bye`, and the notification `$note`.
struct Tally {
    log: Log,
}

fn bye() -> CloseReason {
    CloseReason::Extension { name: "tally", detail: "tally says bye".into(), timeout: false }
}

impl Extension for Tally {
    fn requests(&self) -> &'static [&'static str] {
        &["$tally", "who", "$busy", "$bye"]
    }

    fn notifications(&self) -> &'static [&'static str] {
        &["$note"]
    }

    fn attach(&self, sock: &Sock) {
        let kept = sock.set_state(Seen(sock.info().id)).is_ok();
        let again = sock.set_state(Seen(0)).is_err();
        self.log.lock().unwrap().push(format!("attach kept={kept} refused again={again}"));
    }

    fn peer_understands_reserved(&self, _sock: &Sock) {
        self.log.lock().unwrap().push("ours".into());
    }

    fn request<'a>(
        &'a self,
        sock: &'a Sock,
        op: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
        let answer = match op {
            "$tally" => {
                let seen = sock.state::<Seen>().is_some_and(|seen| seen.0 == sock.info().id);
                Answer::Result(Bytes::from(seen.to_string()))
            }
            "who" => Answer::Error(format!("the extension, given {payload:?}")),
            "$busy" => Answer::Retry("busy".into()),
            _ => {
                sock.close_with(bye(), None);
                Answer::Result(Bytes::new())
            }
        };
        Box::pin(std::future::ready(answer))
    }

    fn notification<'a>(
        &'a self,
        _sock: &'a Sock,
        name: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let text = String::from_utf8_lossy(&payload);
        self.log.lock().unwrap().push(format!("{name} {text}"));
        Box::pin(std::future::ready(()))
    }

    fn detach(&self, sock: &Sock, reason: &CloseReason) {
        let kept = sock.state::<Seen>().is_some();
        self.log.lock().unwrap().push(format!("detach kept={kept}: {reason}"));
    }
}

/// Handlers with the extension, an `on_connect` and an `on_close` hook that log too, and a
/// handler and a notification handler for names the extension claims.
fn handlers(log: &Log) -> Handlers {
    let mut handlers = Handlers::new();
    handlers.extension(Tally { log: log.clone() });
    let l = log.clone();
    handlers.on_connect(move |sock| {
        let kept = sock.state::<Seen>().is_some();
        l.lock().unwrap().push(format!("on_connect kept={kept}"));
        async {}
    });
    let l = log.clone();
    handlers.on_close(move |_sock, reason| {
        let timeout = reason.is_timeout();
        l.lock().unwrap().push(format!("on_close {:?} timeout={timeout}", reason == &bye()));
    });
    handlers.handle("who", |_sock, (): ()| async { Ok::<_, String>("the handler") });
    let l = log.clone();
    handlers.handle_buffer_notification("$note", move |_sock, _payload| {
        l.lock().unwrap().push("the notification handler".into());
        async {}
    });
    handlers
}

async fn wait_for(log: &Log, entry: &str) {
    within(entry, async {
        while !log.lock().unwrap().iter().any(|e| e.starts_with(entry)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_extension_attaches_before_on_connect_and_detaches_before_on_close() {
    let log = Log::default();
    let server = start(handlers(&log), Config::default()).await;
    // A client of ours: it says the hello, so the server learns that at once.
    let client = connect(server.addr).await;
    let tally: bool = within("$tally", client.request("$tally", &())).await.unwrap();
    assert!(tally, "the state the extension kept, for this connection");

    let closed = client.request::<_, ()>("$bye", &()).await;
    assert!(matches!(closed, Err(Error::Closed(_))), "{closed:?}");
    wait_for(&log, "on_close").await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "attach kept=true refused again=true",
            "on_connect kept=true",
            "ours",
            "detach kept=true: tally says bye",
            "on_close true timeout=false",
        ]
    );
}

#[tokio::test]
async fn claimed_names_are_answered_by_the_extension_ahead_of_the_handlers() {
    let log = Log::default();
    let server = start(handlers(&log), Config::default()).await;
    let client = connect(server.addr).await;
    match within("who", client.request::<_, String>("who", &())).await {
        Err(Error::Remote(text)) => assert_eq!(text, "the extension, given b\"null\""),
        other => panic!("{other:?}"),
    }
    // A streaming request is not the extension's: the handler serves it.
    let (mut input, output) = client.stream_request("who", "null").await.unwrap();
    input.end().await.unwrap();
    assert_eq!(within("stream who", output.collect()).await.unwrap(), "\"the handler\"");

    client.buffer_notify("$note", "hi").await.unwrap();
    wait_for(&log, "$note").await;
    client.close();
    wait_for(&log, "on_close").await;
    let log = log.lock().unwrap();
    assert!(log.contains(&"$note hi".to_owned()), "{log:?}");
    assert!(!log.contains(&"the notification handler".to_owned()), "{log:?}");
}

#[tokio::test]
async fn a_claimed_dollar_name_shows_the_peer_is_ours_and_a_plain_one_does_not() {
    let log = Log::default();
    let server = start(handlers(&log), Config::default()).await;
    // Another implementation's client: no hello, so the server says none either.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&request(b"0001", "who", b"1")).await;
    match peer.frame().await {
        Frame::ErrorResult { id, payload } => {
            assert_eq!((id, &payload[..]), (Id(*b"0001"), &b"the extension, given b\"1\""[..]));
        }
        other => panic!("the answer to `who`, not {other:?}"),
    }
    assert!(!log.lock().unwrap().contains(&"ours".to_owned()));

    peer.send(&notification("$note", b"from a peer of ours")).await;
    assert_eq!(peer.read_bytes(HELLO.len()).await, HELLO, "the server's hello, at last");
    wait_for(&log, "$note").await;
    let log = log.lock().unwrap();
    let ours = log.iter().position(|e| e == "ours");
    let note = log.iter().position(|e| e == "$note from a peer of ours");
    assert!(ours.is_some() && ours < note, "{log:?}");
}

#[tokio::test]
async fn a_retry_answer_is_a_retry_result_only_for_a_peer_that_takes_one() {
    for takes_retry in [true, false] {
        let config = Config::default()
            .peer_understands_retry(takes_retry)
            .retry_wait(Duration::from_millis(250), Duration::from_millis(250));
        let server = start(handlers(&Log::default()), config).await;
        let mut peer = WirePeer::connect(server.addr).await;
        peer.send(&request(b"0001", "$busy", b"")).await;
        // A reserved name: the server now knows the peer is one of ours.
        assert_eq!(peer.read_bytes(HELLO.len()).await, HELLO, "the server's hello");
        let id = Id(*b"0001");
        let payload = Bytes::from_static(b"busy");
        let expected = match takes_retry {
            true => Frame::RetryResult { id, wait: 250, payload },
            false => Frame::ErrorResult { id, payload },
        };
        assert_eq!(peer.frame().await, expected, "takes a RetryResult: {takes_retry}");
    }
}
