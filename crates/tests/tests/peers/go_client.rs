//! Our servers with the Go package as their client, over TCP and WebSocket.

use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::{Frame, Id};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use crate::common::web::WsPeer;
use crate::common::{request, WirePeer};
use crate::tools::{self, reserved, Process};
use crate::{Server, START};

/// The Go client's checklist (`gopeer client`) against `server`, idle for `idle` before its
/// last checks. Returns every line it printed; fails the test unless every check passed.
pub(crate) async fn checklist(server: &Server, idle: Duration) -> Option<Vec<String>> {
    let mut command = Command::new(tools::gopeer()?);
    command
        .args(["client", "-tcp", &server.tcp, "-ws", &server.ws(), "-origin", &server.origin()])
        .args(["-idle", &format!("{}ms", idle.as_millis())]);
    let mut client = Process::start("gopeer client", command);
    let (status, lines) = client.finish(idle + Duration::from_secs(60)).await;
    assert!(status.success(), "a check failed\n{}", client.transcript());
    Some(lines)
}

/// The names the Go client's handlers were given, per transport.
pub(crate) fn names(lines: &[String], transport: &str) -> Vec<String> {
    let prefix = format!("names {transport}");
    let line = lines.iter().find(|l| l.starts_with(&prefix)).expect("a names line");
    line[prefix.len()..].split_whitespace().map(str::to_owned).collect()
}

#[tokio::test]
async fn go_client_checklist_against_our_fixture() {
    let server = Server::fixture(&[]).await;
    let Some(lines) = checklist(&server, Duration::ZERO).await else { return };
    for transport in ["tcp", "websocket"] {
        let names = names(&lines, transport);
        // Ending the connection (`end-me`) would have said `$done` to a peer of ours.
        assert_eq!(reserved(&names), Vec::<&String>::new(), "{transport}: {lines:#?}");
        assert_eq!(names, ["client-echo", "echo-note-reply", "hello", "notified"], "{transport}");
    }
}

/// `gotalk serve` (the relay on, probing after 1 s of silence) and Go clients that send a
/// heartbeat every 2 s: the clients see no `$id`, no `$ping` and, when the server stops, no
/// `$done`; they stay connected on their heartbeats, and the drain closes them.
#[tokio::test]
async fn gotalk_serve_sends_go_clients_no_reserved_message() {
    let Some(gopeer) = tools::gopeer() else { return };
    let server =
        Server::gotalk_serve(0, 0, &["--probe-interval", "1", "--probe-misses", "5"]).await;
    let mut command = Command::new(gopeer);
    command.args(["client", "-mode", "names", "-tcp", &server.tcp, "-ws", &server.ws()]).args([
        "-origin",
        &server.origin(),
        "-heartbeat",
        "2s",
        "-idle",
        "4s",
    ]);
    let mut client = Process::start("gopeer client", command);
    for _ in 0..2 {
        client.line(|l| l.starts_with("waiting "), START).await;
    }
    server.process.signal("TERM").await;
    let (status, lines) = client.finish(Duration::from_secs(30)).await;
    assert!(status.success(), "a check failed\n{}", client.transcript());
    for transport in ["tcp", "websocket"] {
        let names = crate::go_client::names(&lines, transport);
        assert_eq!(reserved(&names), Vec::<&String>::new(), "{}", client.transcript());
    }
}

/// A second request with an id already in flight is answered with an ErrorResult, and the
/// connection goes on (Go answers both; closing would lose the first).
#[tokio::test]
async fn a_duplicate_request_id_is_refused_and_the_connection_kept() {
    let server = Server::fixture(&[]).await;
    let addr = server.tcp.parse().unwrap();
    let mut tcp = WirePeer::connect(addr).await;
    tcp.send(&request(b"dup!", "sleep", b"300")).await;
    tcp.send(&request(b"dup!", "echo", b"again")).await;
    tcp.send(&request(b"next", "echo", b"still here")).await;
    let mut answers = Vec::new();
    while answers.len() < 3 {
        match tcp.frame().await {
            Frame::Notification { .. } => {}
            frame => answers.push(frame),
        }
    }
    let duplicate = |f: &Frame| matches!(f, Frame::ErrorResult { id: Id(id), .. } if id == b"dup!");
    assert!(answers.iter().any(duplicate), "an ErrorResult for the duplicate: {answers:?}");
    let first = Frame::SingleResult { id: Id(*b"dup!"), payload: Bytes::from("300") };
    let next = Frame::SingleResult { id: Id(*b"next"), payload: Bytes::from("still here") };
    assert!(answers.contains(&first), "the first is answered: {answers:?}");
    assert!(answers.contains(&next), "the connection goes on: {answers:?}");

    let mut ws = WsPeer::connect(&server.ws()).await;
    for (id, op, payload) in
        [("dup!", "sleep", "300"), ("dup!", "echo", "x"), ("next", "echo", "y")]
    {
        ws.binary(format!("r{id}{:03x}{op}{:08x}", op.len(), payload.len()).as_bytes()).await;
        ws.binary(payload.as_bytes()).await;
    }
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let Message::Binary(header) = ws.message().await else { panic!("a binary message") };
        if header.starts_with(b"n") {
            ws.message().await;
            continue;
        }
        let size = usize::from_str_radix(std::str::from_utf8(&header[5..13]).unwrap(), 16);
        let body = match size.unwrap() {
            0 => String::new(),
            _ => match ws.message().await {
                Message::Binary(body) => String::from_utf8_lossy(&body).into_owned(),
                other => panic!("a payload, got {other:?}"),
            },
        };
        answers.push(format!("{}{}", String::from_utf8_lossy(&header[..5]), body));
    }
    assert!(answers.iter().any(|a| a.starts_with("Edup!")), "{answers:?}");
    assert!(answers.contains(&"Rdup!300".to_owned()), "{answers:?}");
    assert!(answers.contains(&"Rnexty".to_owned()), "{answers:?}");
}
