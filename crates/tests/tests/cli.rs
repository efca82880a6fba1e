//! The `gotalk` binary against the interop fixture, both as real processes: results, error
//! messages and exit statuses of `call`, `notify` and `listen`; and against a hostile server,
//! whose control characters must not reach the operator's terminal.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use gotalk::{Config, Handlers};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

fn gotalk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
}

/// The interop fixture, a binary of this package.
fn interop_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gotalk-interop"))
}

/// The interop fixture on port 0, and the address it printed.
struct Fixture {
    child: Child,
    addr: String,
}

async fn fixture() -> Fixture {
    let mut child = Command::new(interop_path())
        .args(["--tcp", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start gotalk-interop");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("fixture prints its address")
        .expect("read address");
    let addr = line.trim().strip_prefix("tcp ").expect("`tcp ADDR` line").to_owned();
    Fixture { child, addr }
}

async fn run(args: &[&str]) -> Output {
    let out = gotalk().args(args).output();
    tokio::time::timeout(WAIT, out).await.expect("gotalk finishes").expect("run gotalk")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn call_prints_the_result() {
    let f = fixture().await;
    let url = format!("tcp://{}", f.addr);
    let out = run(&["call", &url, "greet", r#"{"name":"Rasmus"}"#]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"greeting\":\"Hello Rasmus\"}\n");

    let out = run(&["call", &f.addr, "echo-json", r#"{ "a" : [1, 2] }"#]).await;
    assert_eq!(text(&out.stdout), "{\"a\":[1,2]}\n", "re-encoded by the server");

    let out = run(&["call", &f.addr, "empty"]).await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "\n");

    let out = run(&["call", &f.addr, "stream-echo", "\"streamed\""]).await;
    assert_eq!(text(&out.stdout), "\"streamed\"\n", "a streaming result is collected");
    drop(f.child);
}

#[tokio::test]
async fn error_results_exit_4_with_the_server_text() {
    let f = fixture().await;
    for (op, message) in [
        ("fail", "error from server: intentional failure"),
        ("nope", "error from server: unknown operation \"nope\""),
        ("panic", "error from server: [internal] internal error (ref "),
        ("stream-fail", "error from server: intentional stream failure"),
    ] {
        let out = run(&["call", &f.addr, op, "1"]).await;
        assert_eq!(out.status.code(), Some(4), "{op}");
        assert!(text(&out.stderr).contains(message), "{op}: {}", text(&out.stderr));
    }
    // The panics did not cost the server its connections or its life.
    let out = run(&["call", &f.addr, "sleep", "10"]).await;
    assert_eq!(text(&out.stdout), "10\n");
    drop(f.child);
}

#[tokio::test]
async fn bad_input_exits_2_and_unreachable_exits_3() {
    let out = run(&["call", "http://example.com:80", "echo"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid url \"http://example.com:80\""));

    let out = run(&["call", "127.0.0.1:1235", "echo", "{not json"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid JSON argument"), "{}", text(&out.stderr));

    // A port nobody listens on.
    let port = gotalk_tests::servers::free_port();
    let out = run(&["call", &format!("127.0.0.1:{port}"), "echo"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot connect to tcp://127.0.0.1:"));
    assert!(text(&out.stderr).contains("refused"), "{}", text(&out.stderr));

    // TLS needs no --ca (the system's authorities are trusted), so this is unreachable too;
    // a --ca file that cannot be read is bad input.
    let out = run(&["call", "tls://127.0.0.1:1", "echo"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(&["call", "--ca", "/nonexistent.pem", "tls://127.0.0.1:1", "echo"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--ca /nonexistent.pem"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn listen_prints_notifications_and_notify_sends_them() {
    let f = fixture().await;
    let mut listen = gotalk()
        .args(["listen", &f.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start listen");
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some(r#"hello {"msg":"welcome","transport":"tcp"}"#));

    // notify: the fixture answers `echo-note` to the sender only, so the command must have
    // delivered it before ending; its success is what we can see from here.
    let out = run(&["notify", &f.addr, "echo-note", "\"hi\""]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    listen.kill().await.ok();
    drop(f.child);
}

/// What a hostile peer sends to the operator's terminal: a window title, a screen clear, an
/// OSC 52 clipboard write, a carriage return that hides what came before it, a C1 CSI, a bidi
/// override, and a line break that would forge the next line.
const HOSTILE: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]52;c;cm0gLXJmIH4=\u{7}ok\rFAKE \
                       \u{9b}31m \u{202e}gnp.exe\u{202c}\ndone forged";

/// HOSTILE as the commands print it.
const ESCAPED: &str = "\\u001b]0;pwned\\u0007\\u001b[2J\\u001b]52;c;cm0gLXJmIH4=\\u0007ok\\rFAKE \
                       \\u009b31m \\u202egnp.exe\\u202c";

/// A server that greets every connection with HOSTILE, as a notification's name and value,
/// then `done`, and answers `hostile` with HOSTILE as its result or its error.
async fn hostile_server() -> common::TestServer {
    let mut handlers = Handlers::new();
    handlers
        .on_connect(|sock| async move {
            let _ = sock.buffer_notify(&format!("x{HOSTILE}"), Bytes::from(HOSTILE)).await;
            let _ = sock.buffer_notify("done", Bytes::from_static(b"1")).await;
        })
        .handle_buffer("hostile", |_sock, _| async { Ok::<_, String>(Bytes::from(HOSTILE)) })
        .handle_buffer("hostile-error", |_sock, _| async {
            Err::<Bytes, _>(gotalk::HandlerError::text(HOSTILE))
        });
    common::start(handlers, Config::default()).await
}

/// True when `out` carries anything a terminal would act on: C0 controls but `\n` and tab,
/// DEL, C1 controls, bidi controls.
fn has_terminal_commands(out: &[u8]) -> bool {
    String::from_utf8_lossy(out).chars().any(|c| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// What `gotalk listen` (with `extra` arguments) prints up to the `done` notification.
async fn listen_output(addr: std::net::SocketAddr, extra: &[&str]) -> Vec<u8> {
    let mut listen = gotalk()
        .args(["listen", &format!("tcp://{addr}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start listen");
    let mut stdout = BufReader::new(listen.stdout.take().unwrap());
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !out.ends_with(b"\ndone 1\n") {
            let n = stdout.read_until(b'\n', &mut out).await.unwrap();
            assert!(n > 0, "listen ended: {}", text(&out));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `done` from listen: {:?}", text(&out)));
    listen.kill().await.ok();
    out
}

#[tokio::test]
async fn listen_escapes_what_a_terminal_would_act_on_unless_raw() {
    let server = hostile_server().await;
    let out = listen_output(server.addr, &[]).await;
    assert!(!has_terminal_commands(&out), "{out:?}");
    // One notification, one line: the peer's line break is escaped too.
    let expected = format!("x{ESCAPED}\\ndone forged {ESCAPED}\\ndone forged\ndone 1\n");
    assert_eq!(text(&out), expected);

    let out = listen_output(server.addr, &["--raw"]).await;
    assert_eq!(text(&out), format!("x{HOSTILE} {HOSTILE}\ndone 1\n"));
    server.stop().await;
}

#[tokio::test]
async fn call_escapes_the_result_unless_raw_and_errors_always() {
    let server = hostile_server().await;
    let url = format!("tcp://{}", server.addr);
    let out = run(&["call", &url, "hostile"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!has_terminal_commands(&out.stdout), "{:?}", out.stdout);
    // A result is a block of its own: its line breaks stay.
    assert_eq!(text(&out.stdout), format!("{ESCAPED}\ndone forged\n"));

    let out = run(&["call", &url, "hostile", "--raw", "not json"]).await;
    assert_eq!(out.stdout, format!("{HOSTILE}\n").as_bytes());

    // An error message quotes the peer, and is escaped whatever --raw says.
    for raw in [&[][..], &["--raw"][..]] {
        let out = run(&[&["call", &url, "hostile-error"][..], raw].concat()).await;
        assert_eq!(out.status.code(), Some(4));
        assert!(!has_terminal_commands(&out.stderr), "{:?}", out.stderr);
        let expected = format!("gotalk: error from server: {ESCAPED}\\ndone forged\n");
        assert_eq!(text(&out.stderr), expected);
    }
    server.stop().await;
}
