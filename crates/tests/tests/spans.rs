//! A connection's span: made only when something needs it, so idle connections (and busy
//! ones with a quiet log) keep none, while the connection's own events still carry its
//! fields, and a connection opened inside a caller's span is that span's child from the start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gotalk::{Config, Handlers, Sock};
use tracing::span::{Attributes, Id};
use tracing::Instrument;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// What the subscriber saw: the spans alive now, by name, and each event's message with the
/// name of the span it was logged in and that span's parent.
#[derive(Default)]
struct Seen {
    alive: HashMap<Id, &'static str>,
    events: Vec<(String, Option<&'static str>, Option<&'static str>)>,
}

impl Seen {
    fn alive(&self, name: &str) -> usize {
        self.alive.values().filter(|n| **n == name).count()
    }

    fn event(&self, message: &str) -> (Option<&'static str>, Option<&'static str>) {
        let found = self.events.iter().find(|(m, ..)| m == message);
        let (_, span, parent) = found.unwrap_or_else(|| panic!("no {message:?} logged"));
        (*span, *parent)
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().alive.insert(id.clone(), attrs.metadata().name());
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().alive.remove(&id);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let span = ctx.event_span(event);
        let parent = span.as_ref().and_then(|s| s.parent()).map(|p| p.name());
        let entry = (message.0, span.map(|s| s.name()), parent);
        self.0.lock().unwrap().events.push(entry);
    }
}

fn echo_handlers() -> Arc<Handlers> {
    let mut handlers = Handlers::new();
    handlers.handle_buffer("echo", |_sock, payload: Bytes| async move {
        Ok::<_, std::convert::Infallible>(payload)
    });
    Arc::new(handlers)
}

async fn pair() -> (Sock, Sock) {
    let config = Arc::new(Config::default());
    let client = (Arc::new(Handlers::new()), config.clone());
    Sock::pipe(client, (echo_handlers(), config)).await.expect("pipe")
}

// Current-thread runtimes: the recorder is this thread's default subscriber, and every task
// runs on this thread.
#[tokio::test]
async fn connections_keep_no_span_until_one_is_asked_for_and_still_log_in_one() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone()).with(LevelFilter::INFO);
    let _default = tracing::subscriber::set_default(subscriber);

    let (client, server) = pair().await;
    let answer = client.buffer_request("echo", Bytes::from_static(b"hi")).await.expect("echo");
    assert_eq!(&answer[..], b"hi");
    assert_eq!(recorder.0.lock().unwrap().alive("conn"), 0, "a span kept before anything asked");
    // Opening was logged in a span with the connection's fields, made for that event alone.
    assert_eq!(recorder.0.lock().unwrap().event("connection opened").0, Some("conn"));

    let span = server.span().clone();
    assert_eq!(span.metadata().map(|m| m.name()), Some("conn"));
    assert_eq!(recorder.0.lock().unwrap().alive("conn"), 1);
    assert_eq!(server.span().id(), span.id(), "made once, then kept");

    server.close();
    client.closed().await;
    assert_eq!(recorder.0.lock().unwrap().event("connection closed").0, Some("conn"));
}

#[tokio::test]
async fn relaying_makes_no_span_either() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone()).with(LevelFilter::INFO);
    let _default = tracing::subscriber::set_default(subscriber);

    let inbox = gotalk::relay::Inbox::new();
    let mut client_handlers = Handlers::new();
    inbox.install(&mut client_handlers);
    let mut server_handlers = Handlers::new();
    server_handlers.relay(gotalk::relay::Relay::new());
    let config = Arc::new(Config::default());
    let (client, _server) = Sock::pipe(
        (Arc::new(client_handlers), config.clone()),
        (Arc::new(server_handlers), config),
    )
    .await
    .expect("pipe");
    let me = client.whoami().await.expect("whoami");
    let mut notes = inbox.topic("notes");
    // A message the server drains into the connection in a task of the relay's.
    client.relay(me, "notes", &"milk").await.expect("relay");
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), notes.recv()).await;
    assert_eq!(&message.expect("delivered in time").expect("a message").body[..], b"\"milk\"");
    assert_eq!(recorder.0.lock().unwrap().alive("conn"), 0, "a span kept for the relay");
}

#[tokio::test]
async fn a_connection_opened_in_a_callers_span_is_its_child_at_once() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone()).with(LevelFilter::INFO);
    let _default = tracing::subscriber::set_default(subscriber);

    let caller = tracing::info_span!("caller");
    let (client, server) = pair().instrument(caller).await;
    // Both ends were opened in the caller's span: both made theirs at once, under it.
    assert_eq!(recorder.0.lock().unwrap().alive("conn"), 2);
    assert_eq!(
        recorder.0.lock().unwrap().event("connection opened"),
        (Some("conn"), Some("caller"))
    );
    drop((client, server));
}
