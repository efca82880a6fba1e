//! The Rust keepalive client against a real server that goes away and comes back on the same
//! ports: reconnects, calls held while down (bounded in number and time), calls in flight
//! failing without being resent, `$done`, `close`, and the client's handlers on every
//! connection. Over TCP and WebSocket.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::within;
use gotalk::keepalive::KeepAlive;
use gotalk::keepalive::{Builder, Event, DEFAULT_MAX_WAITING, DEFAULT_WAIT_TIMEOUT};
use gotalk::protocol::backoff::Backoff;
use gotalk::{CloseReason, Config, Error, Handlers, Sock};
use gotalk_gateway::Gateway;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A fast schedule, so the tests reconnect in tens of milliseconds.
const FAST: Backoff = Backoff { min_ms: 20.0, max_ms: 100.0, factor: 2.0, jitter: 0.5 };

/// One incarnation of the server: TCP and the gateway on fixed addresses, answering `who`
/// with its name, `sleep` (ms) counted in `executions`, `ask-back` by calling the client's
/// `client-name`, and recording the notification `note`.
struct Server {
    tcp: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<()>,
    gateway: Gateway,
    tcp_connections: gotalk::Connections,
}

#[derive(Clone, Default)]
struct Record {
    executions: Arc<AtomicU32>,
    notes: Option<mpsc::UnboundedSender<String>>,
}

impl Server {
    /// Binds `tcp` and `http` (port 0 picks one) and serves.
    async fn start(name: &str, tcp: SocketAddr, http: SocketAddr, record: Record) -> Server {
        let mut h = Handlers::new();
        let name = name.to_owned();
        h.handle("who", move |_sock, _: ()| {
            let name = name.clone();
            async move { Ok::<_, String>(name) }
        });
        let executions = record.executions.clone();
        h.handle("sleep", move |_sock, ms: u64| {
            executions.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, String>(ms)
            }
        });
        h.handle("ask-back", |sock: Sock, _: ()| async move {
            sock.request::<_, String>("client-name", &()).await.map_err(|e| e.to_string())
        });
        let notes = record.notes.clone();
        h.handle_notification("note", move |_sock, text: String| {
            if let Some(notes) = &notes {
                let _ = notes.send(text);
            }
            async {}
        });
        let handlers = Arc::new(h);
        let gateway = Gateway::new(handlers.clone(), Config::default());
        let tcp_server = gotalk::tcp::Server::new(handlers, Config::default());
        let tcp_connections = tcp_server.connections();
        let tcp_listener = TcpListener::bind(tcp).await.expect("bind tcp");
        let http_listener = TcpListener::bind(http).await.expect("bind http");
        let (tcp, http) = (tcp_listener.local_addr().unwrap(), http_listener.local_addr().unwrap());
        let app = axum::Router::new().nest_service("/gotalk", gateway.router());
        let stop = CancellationToken::new();
        let handle = tokio::spawn({
            let (gateway, stop) = (gateway.clone(), stop.clone());
            async move {
                let tcp = Some((tcp_server, tcp_listener));
                let http = gotalk_gateway::http::Server::new(app);
                gateway.run(http, http_listener, tcp, stop.cancelled_owned()).await.unwrap();
            }
        });
        Server { tcp, http, stop, handle, gateway, tcp_connections }
    }

    /// A fresh server on ephemeral ports.
    async fn fresh(name: &str, record: Record) -> Server {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Server::start(name, any, any, record).await
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/gotalk/", self.http)
    }

    /// Dies without a word: no `$done`, listeners gone, every connection cut.
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
        let socks =
            self.tcp_connections.socks().into_iter().chain(self.gateway.connections().socks());
        for sock in socks {
            sock.close();
            sock.closed().await;
        }
    }

    /// Shuts down gracefully: `$done`, requests in flight answered, then closed.
    async fn stop(self) {
        self.stop.cancel();
        within("server drain", self.handle).await.expect("server task");
    }
}

/// The events a keepalive reports, as a channel.
fn events() -> (impl Fn(&Event) + Send + Sync + 'static, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |event: &Event| drop(tx.send(event.clone())), rx)
}

/// Waits for an event that `want` accepts, skipping others.
async fn expect_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    within(what, async {
        loop {
            let event = rx.recv().await.expect("keepalive events ended");
            if want(&event) {
                return event;
            }
        }
    })
    .await
}

fn client_handlers() -> Arc<Handlers> {
    let mut h = Handlers::new();
    h.handle("client-name", |_sock, _: ()| async { Ok::<_, String>("rusty".to_owned()) });
    Arc::new(h)
}

fn tcp_client(server: &Server) -> Builder {
    Builder::tcp_addr(server.tcp, client_handlers(), Config::default()).backoff(FAST).unwrap()
}

fn ws_client(server: &Server) -> Builder {
    Builder::ws(gotalk::ws::Connector::new(), server.ws_url(), client_handlers(), Config::default())
        .backoff(FAST)
        .unwrap()
}

async fn who(client: &KeepAlive) -> String {
    within("who", client.request::<_, String>("who", &())).await.expect("who")
}

/// Waits until `client` has noticed that its connection is gone.
async fn disconnected(client: &KeepAlive) {
    within("disconnect noticed", async {
        while client.is_connected() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Waits until `client` has `n` waiting calls.
async fn waiting(client: &KeepAlive, n: usize) {
    within("calls waiting", async {
        while client.waiting() != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn defaults_are_documented() {
    assert_eq!(DEFAULT_MAX_WAITING, 100);
    assert_eq!(DEFAULT_WAIT_TIMEOUT, Duration::from_secs(30));
    let bad = Backoff { jitter: 2.0, ..Backoff::default() };
    assert!(Builder::tcp("127.0.0.1:1", client_handlers(), Config::default())
        .backoff(bad)
        .is_err());
}

/// The addresses of a server, to start its next incarnation after it is gone.
#[derive(Clone, Copy)]
struct Ports {
    tcp: SocketAddr,
    http: SocketAddr,
}

impl Server {
    fn ports(&self) -> Ports {
        Ports { tcp: self.tcp, http: self.http }
    }
}

impl Ports {
    async fn start(self, name: &str, record: Record) -> Server {
        Server::start(name, self.tcp, self.http, record).await
    }
}

async fn reconnects_after_a_crash(builder: fn(&Server) -> Builder) {
    let one = Server::fresh("one", Record::default()).await;
    let ports = one.ports();
    let (observe, mut rx) = events();
    let client = builder(&one).on_event(observe).start();
    assert_eq!(who(&client).await, "one");
    expect_event(&mut rx, "first connection", |e| matches!(e, Event::Connected { number: 1 }))
        .await;

    one.crash().await;
    let lost =
        expect_event(&mut rx, "disconnect", |e| matches!(e, Event::Disconnected { .. })).await;
    let Event::Disconnected { reason: Error::Closed(_), retry_in } = lost else {
        panic!("the lost connection is reported with its close reason: {lost:?}");
    };
    assert!(retry_in <= Duration::from_millis(100), "within the schedule's max: {retry_in:?}");
    // Nobody listens: attempts fail and say so, each with its next delay.
    let failed =
        expect_event(&mut rx, "failed attempt", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(failed, Event::Disconnected { reason: Error::Connect(_), .. }), "{failed:?}");
    assert!(!client.is_connected());

    let two = ports.start("two", Record::default()).await;
    expect_event(&mut rx, "reconnect", |e| matches!(e, Event::Connected { number: 2 })).await;
    assert_eq!(who(&client).await, "two");
    assert_eq!(client.connections(), 2);
    client.close();
    expect_event(&mut rx, "closed", |e| matches!(e, Event::Closed)).await;
    two.stop().await;
}

#[tokio::test]
async fn tcp_reconnects_after_the_server_dies() {
    reconnects_after_a_crash(tcp_client).await;
}

#[tokio::test]
async fn websocket_reconnects_after_the_server_dies() {
    reconnects_after_a_crash(ws_client).await;
}

#[tokio::test]
async fn a_request_in_flight_when_the_connection_dies_fails_and_is_not_resent() {
    let record = Record::default();
    let one = Server::fresh("one", record.clone()).await;
    let ports = one.ports();
    let client = tcp_client(&one).start();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &10_000u64).await }
    });
    within("the request reaches the server", async {
        while record.executions.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    one.crash().await;
    let failed = within("the request fails", slow).await.unwrap();
    assert!(
        matches!(failed, Err(Error::Closed(CloseReason::PeerClosed | CloseReason::Io(_)))),
        "{failed:?}"
    );

    let two = ports.start("two", record.clone()).await;
    assert_eq!(within("a new request", client.request::<_, u64>("sleep", &0u64)).await.unwrap(), 0);
    // One execution on the first server, one for the new request: nothing was sent again.
    assert_eq!(record.executions.load(Ordering::SeqCst), 2);
    two.stop().await;
}

async fn calls_made_while_down_are_answered_by_the_next_server(builder: fn(&Server) -> Builder) {
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let record = Record { notes: Some(notes_tx), ..Record::default() };
    let one = Server::fresh("one", record.clone()).await;
    let ports = one.ports();
    let client = builder(&one).start();
    assert_eq!(who(&client).await, "one");
    one.crash().await;
    disconnected(&client).await;

    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, String>("who", &()).await }
    });
    let buffer = tokio::spawn({
        let client = client.clone();
        async move { client.buffer_request("who", "null").await }
    });
    let note = tokio::spawn({
        let client = client.clone();
        async move { client.notify("note", "while down").await }
    });
    waiting(&client, 3).await;
    // Longer than several attempts of the schedule: they are still waiting, not failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.waiting(), 3);

    let two = ports.start("two", record).await;
    assert_eq!(within("request", request).await.unwrap().unwrap(), "two");
    assert_eq!(&within("buffer request", buffer).await.unwrap().unwrap()[..], b"\"two\"");
    within("notify", note).await.unwrap().unwrap();
    assert_eq!(within("note arrives", notes.recv()).await.unwrap(), "while down");
    two.stop().await;
}

#[tokio::test]
async fn tcp_calls_made_while_down_wait_for_the_next_server() {
    calls_made_while_down_are_answered_by_the_next_server(tcp_client).await;
}

#[tokio::test]
async fn websocket_calls_made_while_down_wait_for_the_next_server() {
    calls_made_while_down_are_answered_by_the_next_server(ws_client).await;
}

/// Ports nothing listens on (yet).
fn free_ports() -> Ports {
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let free_port = gotalk_tests::servers::free_port;
    Ports { tcp: at(free_port()), http: at(free_port()) }
}

#[tokio::test]
async fn at_most_max_waiting_calls_wait_and_the_next_fails_at_once() {
    let ports = free_ports();
    let client = Builder::tcp_addr(ports.tcp, client_handlers(), Config::default())
        .backoff(FAST)
        .unwrap()
        .max_waiting(2)
        .start();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request::<_, String>("who", &()).await })
        })
        .collect();
    waiting(&client, 2).await;
    let started = Instant::now();
    let refused = client.request::<_, String>("who", &()).await;
    assert!(matches!(refused, Err(Error::TooManyWaiting(2))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
    assert_eq!(
        refused.unwrap_err().to_string(),
        "2 calls already wait for a connection; the call was not sent"
    );

    let server = ports.start("late", Record::default()).await;
    for call in held {
        assert_eq!(within("held call", call).await.unwrap().unwrap(), "late");
    }
    assert_eq!(client.waiting(), 0);
    server.stop().await;
}

#[tokio::test]
async fn max_waiting_zero_fails_every_call_made_while_down() {
    let ports = free_ports();
    let client =
        Builder::tcp_addr(ports.tcp, client_handlers(), Config::default()).max_waiting(0).start();
    let refused = client.request::<_, String>("who", &()).await;
    assert!(matches!(refused, Err(Error::TooManyWaiting(0))), "{refused:?}");
}

#[tokio::test]
async fn a_call_waits_up_to_wait_timeout_for_a_connection() {
    let ports = free_ports();
    let limit = Duration::from_millis(300);
    let client = Builder::tcp_addr(ports.tcp, client_handlers(), Config::default())
        .backoff(FAST)
        .unwrap()
        .wait_timeout(limit)
        .start();
    // Past the limit: no server comes, the call fails, unsent.
    let started = Instant::now();
    let gave_up = client.request::<_, String>("who", &()).await;
    let waited = started.elapsed();
    assert!(matches!(gave_up, Err(Error::NoConnection(d)) if d == limit), "{gave_up:?}");
    assert!(waited >= limit && waited < limit * 3, "waited {waited:?}");
    assert_eq!(client.waiting(), 0);

    // Within the limit: a server that comes back while the call waits answers it.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, String>("who", &()).await }
    });
    waiting(&client, 1).await;
    let server = ports.start("in time", Record::default()).await;
    assert_eq!(within("call within the limit", call).await.unwrap().unwrap(), "in time");
    server.stop().await;
}

#[tokio::test]
async fn after_done_new_calls_wait_for_the_next_server() {
    let record = Record::default();
    let one = Server::fresh("one", record.clone()).await;
    let ports = one.ports();
    let (observe, mut rx) = events();
    let client = tcp_client(&one).on_event(observe).start();
    assert_eq!(who(&client).await, "one");
    // A request in flight keeps the draining server's connection open after `$done`.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &400u64).await }
    });
    within("in flight", async {
        while record.executions.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let stopping = tokio::spawn(one.stop());
    expect_event(&mut rx, "$done", |e| matches!(e, Event::ServerDone)).await;
    assert!(!client.is_connected(), "a server that said $done takes no new calls");
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, String>("who", &()).await }
    });
    waiting(&client, 1).await;
    // The drain answers what was in flight, then closes: a going-away close.
    assert_eq!(within("in-flight request", slow).await.unwrap().unwrap(), 400);
    within("old server gone", stopping).await.unwrap();
    let lost =
        expect_event(&mut rx, "disconnect", |e| matches!(e, Event::Disconnected { .. })).await;
    let Event::Disconnected { retry_in, .. } = lost else { unreachable!() };
    // The going-away spread is [0, 2 × min) = [0, 40 ms).
    assert!(retry_in < Duration::from_millis(40), "{retry_in:?}");

    let two = ports.start("two", record).await;
    assert_eq!(within("held call", held).await.unwrap().unwrap(), "two");
    two.stop().await;
}

#[tokio::test]
async fn close_stops_reconnecting_and_fails_what_waits() {
    let record = Record::default();
    let one = Server::fresh("one", record.clone()).await;
    let (observe, mut rx) = events();
    let client = tcp_client(&one).on_event(observe).start();
    assert_eq!(who(&client).await, "one");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &10_000u64).await }
    });
    within("in flight", async {
        while record.executions.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    client.close();
    let failed = within("in-flight call", in_flight).await.unwrap();
    assert!(matches!(failed, Err(Error::Closed(CloseReason::Local))), "{failed:?}");
    expect_event(&mut rx, "closed", |e| matches!(e, Event::Closed)).await;
    let later = client.request::<_, String>("who", &()).await;
    assert!(matches!(later, Err(Error::Closed(CloseReason::Local))), "{later:?}");
    // Nothing reconnects: the server sees no new connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(one.tcp_connections.len(), 0);
    one.stop().await;

    // A call waiting for a connection when close comes fails too.
    let ports = free_ports();
    let client = Builder::tcp_addr(ports.tcp, client_handlers(), Config::default()).start();
    let waiting_call = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, String>("who", &()).await }
    });
    waiting(&client, 1).await;
    client.close();
    let failed = within("waiting call", waiting_call).await.unwrap();
    assert!(matches!(failed, Err(Error::Closed(CloseReason::Local))), "{failed:?}");
}

#[tokio::test]
async fn dropping_every_handle_stops_the_keepalive() {
    let one = Server::fresh("one", Record::default()).await;
    let client = tcp_client(&one).start();
    assert_eq!(who(&client).await, "one");
    assert_eq!(one.tcp_connections.len(), 1);
    drop(client);
    within("connection closed", async {
        while !one.tcp_connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    one.stop().await;
}

async fn handlers_answer_on_every_connection(builder: fn(&Server) -> Builder) {
    let one = Server::fresh("one", Record::default()).await;
    let ports = one.ports();
    let client = builder(&one).start();
    let asked = || client.request::<_, String>("ask-back", &());
    assert_eq!(within("ask back", asked()).await.unwrap(), "rusty");
    one.crash().await;
    // A call made before the client has read the end of the connection goes out on it and
    // fails with Error::Closed; wait until it knows.
    disconnected(&client).await;
    let two = ports.start("two", Record::default()).await;
    assert_eq!(within("ask back after reconnect", asked()).await.unwrap(), "rusty");
    assert_eq!(client.connections(), 2);
    two.stop().await;
}

#[tokio::test]
async fn tcp_handlers_answer_the_server_on_every_connection() {
    handlers_answer_on_every_connection(tcp_client).await;
}

#[tokio::test]
async fn websocket_handlers_answer_the_server_on_every_connection() {
    handlers_answer_on_every_connection(ws_client).await;
}

#[tokio::test]
async fn a_stream_request_goes_out_on_the_current_connection() {
    let server = common::start(common::handlers(), Config::default()).await;
    let client = Builder::tcp_addr(server.addr, client_handlers(), Config::default()).start();
    let (mut request, response) =
        within("stream", client.stream_request("stream-echo", "ab")).await.unwrap();
    request.write("cd").await.unwrap();
    request.end().await.unwrap();
    assert_eq!(&within("collect", response.collect()).await.unwrap()[..], b"abcd");
    server.stop().await;
}

/// A refusal stops the redialling, fails calls at once with its reason (a waiting one too),
/// and `resume` dials again, as the browser client does: a server that refuses a client
/// until it logs in is not hammered meanwhile.
#[tokio::test]
async fn a_refusal_stops_redialling_until_resume() {
    let logged_in = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(AtomicU32::new(0));
    let (allowed, counted) = (logged_in.clone(), attempts.clone());
    let mut handlers = Handlers::new();
    handlers.handle("who", |_sock, _: ()| async { Ok::<_, String>("in".to_owned()) });
    let server =
        gotalk::tcp::Server::new(Arc::new(handlers), Config::default()).on_connect(move |info| {
            counted.fetch_add(1, Ordering::SeqCst);
            let allowed = allowed.load(Ordering::SeqCst);
            async move {
                match allowed {
                    true => Ok(info),
                    false => Err(gotalk::Refusal::unauthorized("log in first")),
                }
            }
        });
    let server = common::serve(server).await;
    let (events, mut heard) = mpsc::unbounded_channel();
    let client = Builder::tcp(server.addr.to_string(), client_handlers(), Config::default())
        .backoff(FAST)
        .unwrap()
        .on_event(move |event| {
            let _ = events.send(event.clone());
        })
        .start();
    let early = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<_, String>("who", &()).await })
    };
    within("the refusal", async {
        while !matches!(heard.recv().await, Some(Event::Refused { .. })) {}
    })
    .await;
    assert!(client.is_refused());
    let early = within("the call made before the refusal", early).await.unwrap();
    assert!(matches!(early, Err(Error::Refused { code: 4401, .. })), "{early:?}");
    let err = within("a call while refused", client.request::<_, String>("who", &()))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Refused { code: 4401, reason } if reason == "log in first"),
        "{err:?}"
    );
    // Several backoff steps (20–100 ms) pass without another attempt.
    let refused_at = attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), refused_at, "no redial while refused");

    logged_in.store(true, Ordering::SeqCst);
    client.resume();
    assert_eq!(who(&client).await, "in");
    assert!(!client.is_refused());
    assert_eq!(attempts.load(Ordering::SeqCst), refused_at + 1);
    client.close();
}

/// A refusal that is not about who the client is (a 503 while the server is busy) is retried
/// on the schedule.
#[tokio::test]
async fn other_refusals_are_retried_on_the_schedule() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let server = gotalk::tcp::Server::new(Arc::new(Handlers::new()), Config::default()).on_connect(
        move |_info| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(gotalk::Refusal::from_status(503, "busy")) }
        },
    );
    let server = common::serve(server).await;
    let client = Builder::tcp(server.addr.to_string(), client_handlers(), Config::default())
        .backoff(FAST)
        .unwrap()
        .start();
    within("several attempts", async {
        while attempts.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!client.is_refused());
    client.close();
}
