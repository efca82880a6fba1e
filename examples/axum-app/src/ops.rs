//! The app's operations, and the middleware around them: a count of every call, a login
//! check around `rooms.*`, and a rate limit around `rooms.post`.
//!
//! `rooms.next` waits for the next post to a room (a long poll), and has two deadlines: the
//! caller's own (`sock.with_timeout` in Rust, `{timeout}` or an AbortSignal in the page),
//! after which the caller stops waiting and the answer, when it comes, is dropped; and the
//! app's, `Settings::wait`, after which it answers the public error `[timeout] …` so no call
//! holds a slot for ever.
//!
//! What a failing op shows the page is its choice: a room that does not exist is the public
//! error `[not_found] …`; a history that cannot be read (a disk error, as a database error
//! would be) goes out as `[internal] internal error (ref …)`, and the log has the reference
//! with the real error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gotalk::middleware::{from_fn, Call, Handler, Reply};
use gotalk::{HandlerError, Handlers, Sock};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::auth;

/// What the app's operations need.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where each room's history is kept, one file per room.
    pub(crate) data: PathBuf,
    /// How many posts a connection may make per `window`.
    pub(crate) posts: u32,
    pub(crate) window: Duration,
    /// How long `rooms.next` waits for a post before it answers `[timeout]`.
    pub(crate) wait: Duration,
}

/// Who a connection logged in as.
struct User(String);

/// The posts a connection made in its current window.
#[derive(Default)]
struct Posts(Mutex<Option<(Instant, u32)>>);

#[derive(Deserialize)]
struct AddIn {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct PostIn {
    room: String,
    text: String,
}

/// The operations, inside their middleware. `calls` counts every call.
pub(crate) fn handlers(settings: Settings, calls: Arc<AtomicU64>) -> Handlers {
    let mut handlers = Handlers::new();
    let data = settings.data.clone();
    let history_data = data.clone();
    // Every post, to the calls of `rooms.next` waiting for one. A waiter that falls behind
    // a burst of more than this many posts learns of the newest instead.
    let (posted, _) = tokio::sync::broadcast::channel::<(String, String)>(64);
    let next_posted = posted.clone();
    let wait = settings.wait;
    handlers
        .handle(
            "shout",
            |_sock, text: String| async move { Ok::<_, HandlerError>(text.to_uppercase()) },
        )
        .handle("add", |_sock, input: AddIn| async move {
            input
                .a
                .checked_add(input.b)
                .ok_or(HandlerError::public("overflow", "the sum overflows"))
        })
        .handle("login", |sock, name: String| async move { login(&sock, name) })
        .handle("whoami", |sock, (): ()| async move {
            // Set by the private gateway's on_connect; none on the public one.
            let user = sock.info().request.as_ref().and_then(|r| r.extensions.get::<auth::User>());
            Ok::<_, HandlerError>(user.map(|u| u.0.clone()))
        })
        .handle("rooms.history", move |_sock, room: String| {
            let data = history_data.clone();
            async move { history(&data, &room).await }
        })
        .handle("rooms.post", move |sock, input: PostIn| {
            let (data, posted) = (data.clone(), posted.clone());
            async move { post(&data, &sock, input, &posted).await }
        })
        .handle("rooms.next", move |_sock, room: String| {
            let posts = next_posted.subscribe();
            async move { next_post(posts, &room, wait).await }
        });
    // The layer added last runs first: the count, then the login check, then the rate limit,
    // so a connection that is not logged in spends none of its posts.
    handlers
        .layer_for(
            "rooms.post",
            from_fn(move |call, next| limit_posts(call, next, settings.posts, settings.window)),
        )
        .layer_for("rooms.*", from_fn(require_login))
        .layer(from_fn(move |call: Call, next: Handler| {
            calls.fetch_add(1, Ordering::Relaxed);
            next.run(call)
        }));
    handlers
}

fn login(sock: &Sock, name: String) -> Result<(), HandlerError> {
    if name.is_empty() || name.len() > 32 || !name.chars().all(char::is_alphanumeric) {
        return Err(HandlerError::public("bad_name", "a name is 1 to 32 letters or digits"));
    }
    sock.set_state(User(name)).map_err(|_| HandlerError::public("conflict", "already logged in"))
}

async fn require_login(call: Call, next: Handler) -> Result<Reply, HandlerError> {
    if call.sock().state::<User>().is_none() {
        return Err(HandlerError::public("unauthorized", "log in first"));
    }
    next.run(call).await
}

/// The rate limit around `rooms.post`: each connection makes `posts` calls per `window`, and
/// the others are answered with a RetryResult.
async fn limit_posts(
    call: Call,
    next: Handler,
    posts: u32,
    window: Duration,
) -> Result<Reply, HandlerError> {
    let sock = call.sock();
    // One counter per connection, kept with it, so it goes when the connection does.
    let _ = sock.set_state(Posts::default());
    let allowed = sock.state::<Posts>().is_some_and(|posts_made| {
        let mut made = posts_made.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (start, count) = made.get_or_insert((now, 0));
        if now.duration_since(*start) >= window {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count <= posts
    });
    if !allowed {
        return Err(HandlerError::retry(format!("at most {posts} posts per {window:?}")));
    }
    next.run(call).await
}

/// A room's file, for a valid room name.
fn room_file(data: &Path, room: &str) -> Result<PathBuf, HandlerError> {
    let valid = !room.is_empty()
        && room.len() <= 64
        && room.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(HandlerError::public("bad_room", "a room is 1 to 64 of a-z, 0-9, - and _"));
    }
    Ok(data.join(format!("{room}.log")))
}

async fn history(data: &Path, room: &str) -> Result<Vec<String>, HandlerError> {
    let file = room_file(data, room)?;
    let text = match tokio::fs::read_to_string(&file).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HandlerError::public("not_found", format!("no room {room:?}")));
        }
        // Any other failure is ours, not the page's: it sees a reference, the log the rest.
        other => {
            other.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?
        }
    };
    Ok(text.lines().map(str::to_owned).collect())
}

async fn post(
    data: &Path,
    sock: &Sock,
    input: PostIn,
    posted: &tokio::sync::broadcast::Sender<(String, String)>,
) -> Result<(), HandlerError> {
    let file = room_file(data, &input.room)?;
    let user = sock.state::<User>().map_or("?", |u| u.0.as_str());
    let line = format!("{user}: {}", input.text.replace('\n', " "));
    let mut out = tokio::fs::OpenOptions::new().create(true).append(true).open(&file).await?;
    out.write_all(format!("{line}\n").as_bytes()).await?;
    // A tokio file's write returns once the bytes are handed to a blocking thread; the flush
    // waits for them to be written, so a history read after this post's answer has it.
    out.flush().await?;
    // Nobody waiting is not an error.
    let _ = posted.send((input.room, line));
    Ok(())
}

/// The next post to `room`, or `[timeout]` once `wait` has passed without one.
async fn next_post(
    mut posts: tokio::sync::broadcast::Receiver<(String, String)>,
    room: &str,
    wait: Duration,
) -> Result<String, HandlerError> {
    let next = async {
        loop {
            match posts.recv().await {
                Ok((to, line)) if to == room => return Ok(line),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(HandlerError::public("closing", "the app is stopping"));
                }
            }
        }
    };
    tokio::time::timeout(wait, next).await.unwrap_or_else(|_| {
        Err(HandlerError::public("timeout", format!("no post to {room:?} within {wait:?}")))
    })
}
