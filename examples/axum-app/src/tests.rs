//! The app served on 127.0.0.1:0, called by gotalk's WebSocket client as a page would be.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gotalk::{Config, Error, Handlers, Sock};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing_subscriber::util::SubscriberInitExt;

use crate::ops::Settings;

/// What the app logged.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct App {
    addr: SocketAddr,
    data: PathBuf,
    log: Log,
    _stop: oneshot::Sender<()>,
    // Tests run on one thread (tokio's default for tests), where this subscriber is the one
    // every task of the app logs to.
    _logging: tracing::subscriber::DefaultGuard,
}

/// The app, `posts` posts per connection allowed each minute, with an empty data folder.
async fn start(posts: u32) -> App {
    start_with(posts, Duration::from_secs(25)).await
}

/// As [`start`], with `rooms.next` waiting at most `wait`.
async fn start_with(posts: u32, wait: Duration) -> App {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("gotalk-app-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let log = Log::default();
    let writer = log.clone();
    let logging = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings { data: data.clone(), posts, window: Duration::from_secs(60), wait };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::serve(listener, settings, async move {
        let _ = stopped.await;
    }));
    App { addr, data, log, _stop: stop, _logging: logging }
}

impl App {
    /// A page's connection, which reports the first RetryResult rather than retrying.
    async fn connect(&self) -> Sock {
        let url = format!("ws://{}/gotalk/", self.addr);
        let config = Config::default().max_retries(0);
        gotalk::ws::connect(&url, Arc::new(Handlers::new()), config).await.unwrap()
    }

    /// The JSON of `/api/health`.
    async fn health(&self) -> serde_json::Value {
        let mut http = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let request = "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        http.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        http.read_to_string(&mut response).await.unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        serde_json::from_str(body).unwrap()
    }
}

async fn call(sock: &Sock, op: &str, value: serde_json::Value) -> Result<serde_json::Value, Error> {
    sock.request(op, &value).await
}

/// The code and message of a call's ErrorResult.
fn remote(outcome: Result<serde_json::Value, Error>) -> (Option<String>, String) {
    let err = outcome.expect_err("an ErrorResult");
    let remote = err.remote().unwrap_or_else(|| panic!("not an ErrorResult: {err:?}"));
    (remote.code().map(str::to_owned), remote.message().to_owned())
}

#[tokio::test]
async fn a_failing_store_is_an_internal_error_whose_reference_is_logged() {
    let app = start(5).await;
    // A history that cannot be read: the room's file is a folder.
    std::fs::create_dir(app.data.join("broken.log")).unwrap();
    let page = app.connect().await;
    call(&page, "login", json!("ada")).await.unwrap();

    let (code, message) = remote(call(&page, "rooms.history", json!("broken")).await);
    assert_eq!(code.as_deref(), Some("internal"));
    let reference = message
        .strip_prefix("internal error (ref ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{message:?}"));
    assert_eq!(reference.len(), 16, "{message:?}");
    // The page learns nothing of the server's files; the log has it all, by reference.
    let log = app.log.text();
    let line = log.lines().find(|l| l.contains(reference)).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("ERROR") && line.contains("rooms.history"), "{line}");
    assert!(line.contains(&app.data.join("broken.log").display().to_string()), "{line}");
    assert!(!message.contains("broken.log"), "{message}");
}

#[tokio::test]
async fn a_public_error_reaches_the_page_with_its_code() {
    let app = start(5).await;
    let page = app.connect().await;
    call(&page, "login", json!("ada")).await.unwrap();
    let err = call(&page, "rooms.history", json!("nowhere")).await.unwrap_err();
    // The whole text, as gotalk.js and Go show it, and read back as a code and a message.
    assert!(matches!(&err, Error::Remote(text) if text == r#"[not_found] no room "nowhere""#));
    let (code, message) = remote(Err(err));
    assert_eq!((code.as_deref(), message.as_str()), (Some("not_found"), r#"no room "nowhere""#));

    let overflow = call(&page, "add", json!({"a": i64::MAX, "b": 1})).await;
    assert_eq!(remote(overflow), (Some("overflow".into()), "the sum overflows".into()));
    // Nothing the handler meant for the page went to the error log.
    assert!(!app.log.text().contains("ERROR"), "{}", app.log.text());
}

#[tokio::test]
async fn login_is_required_under_rooms_and_nowhere_else() {
    let app = start(5).await;
    let page = app.connect().await;
    assert_eq!(call(&page, "shout", json!("hi")).await.unwrap(), json!("HI"));
    for (op, value) in [
        ("rooms.history", json!("lobby")),
        ("rooms.post", json!({"room": "lobby", "text": "hello"})),
    ] {
        let refused = remote(call(&page, op, value).await);
        assert_eq!(refused, (Some("unauthorized".into()), "log in first".into()), "{op}");
    }
    assert!(!app.data.join("lobby.log").exists(), "a refused post reached the store");

    call(&page, "login", json!("ada")).await.unwrap();
    call(&page, "rooms.post", json!({"room": "lobby", "text": "hello"})).await.unwrap();
    let history = call(&page, "rooms.history", json!("lobby")).await.unwrap();
    assert_eq!(history, json!(["ada: hello"]));
}

#[tokio::test]
async fn posts_past_the_rate_limit_get_a_retry() {
    let app = start(2).await;
    let page = app.connect().await;
    call(&page, "login", json!("ada")).await.unwrap();
    let post = json!({"room": "lobby", "text": "hello"});
    for _ in 0..2 {
        call(&page, "rooms.post", post.clone()).await.unwrap();
    }
    match call(&page, "rooms.post", post.clone()).await {
        Err(Error::Retry { message, .. }) => assert_eq!(message, "at most 2 posts per 60s"),
        other => panic!("{other:?}"),
    }
    // Other ops, and other connections, have limits of their own.
    call(&page, "rooms.history", json!("lobby")).await.unwrap();
    let other = app.connect().await;
    call(&other, "login", json!("bob")).await.unwrap();
    call(&other, "rooms.post", post).await.unwrap();
}

/// The count runs first, then the login check, then the rate limit: refused calls are
/// counted, and a connection that is not logged in spends none of its posts.
#[tokio::test]
async fn middleware_runs_in_order_count_then_login_then_rate_limit() {
    let app = start(2).await;
    let page = app.connect().await;
    let post = json!({"room": "lobby", "text": "hello"});
    for _ in 0..3 {
        let refused = remote(call(&page, "rooms.post", post.clone()).await);
        assert_eq!(refused.0.as_deref(), Some("unauthorized"));
    }
    call(&page, "login", json!("ada")).await.unwrap();
    for _ in 0..2 {
        call(&page, "rooms.post", post.clone()).await.unwrap();
    }
    assert!(matches!(call(&page, "rooms.post", post).await, Err(Error::Retry { .. })));
    assert_eq!(app.health().await["calls"], json!(7));
}

/// `rooms.next` waits for the next post to its room: the caller's deadline ends the wait on
/// its side (the app answers later, unheard), and the app's own deadline ends it with a
/// public `[timeout]`.
#[tokio::test]
async fn a_long_poll_ends_with_a_post_or_at_the_callers_deadline_or_the_apps() {
    let app = start_with(5, Duration::from_millis(400)).await;
    let page = app.connect().await;
    call(&page, "login", json!("ada")).await.unwrap();
    let other = app.connect().await;
    call(&other, "login", json!("bob")).await.unwrap();

    // A post to the room ends the wait; one to another room does not.
    let next = page.request::<_, String>("rooms.next", &"lobby");
    let posts = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        call(&other, "rooms.post", json!({"room": "elsewhere", "text": "no"})).await.unwrap();
        call(&other, "rooms.post", json!({"room": "lobby", "text": "hi"})).await.unwrap();
    };
    let (line, ()) = tokio::join!(next, posts);
    assert_eq!(line.unwrap(), "bob: hi");

    // The caller's deadline: it gives up first, and the connection goes on.
    let quick = page.with_timeout(Duration::from_millis(100));
    let err = quick.request::<_, String>("rooms.next", &"lobby").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(call(&page, "shout", json!("still here")).await.unwrap(), json!("STILL HERE"));

    // The app's deadline, with no deadline of the caller's.
    let bounded =
        tokio::time::timeout(Duration::from_secs(5), call(&page, "rooms.next", json!("lobby")));
    let (code, message) = remote(bounded.await.expect("the app's deadline ends the wait"));
    assert_eq!(code.as_deref(), Some("timeout"), "{message}");
}
