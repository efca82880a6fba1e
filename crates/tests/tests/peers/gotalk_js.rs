//! gotalk.js 1.2.1, unmodified, in Node (the `ws` package as its WebSocket), against our
//! servers.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::tools::{self, reserved, Process};
use crate::{port, Server, START};

/// gotalk.js's checklist (`node/gotalkjs.js checklist`) against the fixture at `server`,
/// idle for `idle` before its last checks. Returns the names its handlers were given; fails
/// the test unless every check passed.
pub(crate) async fn checklist(server: &Server, idle: Duration) -> Option<Vec<String>> {
    let mut command = tools::node()?;
    command.arg("checklist").arg(tools::gotalk_js()).arg(server.ws());
    command.arg(idle.as_millis().to_string());
    let mut node = Process::start("gotalk.js checklist", command);
    let (status, lines) = node.finish(idle + Duration::from_secs(60)).await;
    assert!(status.success(), "a check failed\n{}", node.transcript());
    let names = lines.iter().find_map(|l| l.strip_prefix("names")).expect("a names line");
    Some(names.split_whitespace().map(str::to_owned).collect())
}

#[tokio::test]
async fn gotalk_js_checklist_against_our_fixture() {
    let server = Server::fixture(&[]).await;
    let Some(names) = checklist(&server, Duration::ZERO).await else { return };
    // `end-me` would have said `$done` to a client of ours.
    assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
    assert_eq!(names, ["client-echo", "echo-note-reply", "hello", "notified"]);
}

/// `gotalk serve` killed with SIGKILL and started again on the same port under gotalk.js's
/// keepalive: it reconnects on its own schedule, every request is answered with its own
/// number or fails (the ones in flight at the kill), none is lost or answered twice. Then a
/// SIGTERM drains the new server. The page sees no `$id` (the relay is on) and no `$done`.
#[tokio::test]
async fn gotalk_js_keepalive_across_a_sigkill_of_gotalk_serve() {
    let Some(mut command) = tools::node() else { return };
    let mut server = Server::gotalk_serve(0, 0, &[]).await;
    let (http_port, tcp_port) = (port(&server.http), port(&server.tcp));
    command.arg("keepalive").arg(tools::gotalk_js()).arg(server.ws());
    let mut node = Process::start("gotalk.js keepalive", command);
    node.line(|l| l == "open 1", START).await;
    for _ in 0..5 {
        node.line(|l| l.starts_with("answered "), START).await;
    }

    server.process.child.kill().await.expect("SIGKILL gotalk serve");
    node.line(|l| l.starts_with("close "), START).await;
    let killed = tokio::time::Instant::now();
    server = Server::gotalk_serve(http_port, tcp_port, &[]).await;
    node.line(|l| l == "open 2", START).await;
    let back = killed.elapsed();
    // Five answers to requests sent on the new connection.
    for _ in 0..5 {
        node.line(|l| l.starts_with("answered ") && l.ends_with(" sent-on 2"), START).await;
    }

    let mut stdin = node.child.stdin.take().expect("stdin");
    stdin.write_all(b"quiet\n").await.expect("tell gotalk.js to stop sending");
    node.line(|l| l == "quiet", START).await;
    server.process.signal("TERM").await;
    node.line(|l| l.starts_with("close "), START).await;
    stdin.write_all(b"stop\n").await.expect("tell gotalk.js to stop");
    let tally = node.value("tally ", Duration::from_secs(30)).await;
    let tally: serde_json::Value = serde_json::from_str(&tally).expect("a JSON tally");
    println!("gotalk.js back {back:?} after the kill: {tally}");
    assert!(tally["opens"].as_u64().unwrap() >= 2, "{tally}");
    assert!(tally["afterReopen"].as_u64().unwrap() >= 5, "{tally}");
    for never in ["lost", "mismatched", "duplicated"] {
        assert_eq!(tally[never], 0, "{never}: {tally}\n{}", node.transcript());
    }
    let names = node.transcript();
    let names = names.lines().find_map(|l| l.strip_prefix("names")).expect("names");
    let names: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
    assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
}
