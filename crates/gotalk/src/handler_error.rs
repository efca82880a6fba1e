//! What the peer is told when a handler fails, and what this side reads back.
//!
//! A handler chooses what the peer sees: [`HandlerError::public`] (a code and a message the
//! peer may read), [`HandlerError::text`] (text as is, with no code), or
//! [`HandlerError::retry`]. Anything else, such as an error `?` converted from a database
//! call, reaches the peer as `[internal] internal error (ref …)` with a fresh reference, and
//! is logged at error level with that reference, the op and the real error. The text format
//! is [`gotalk_protocol::error_text`]'s.

use std::borrow::Cow;
use std::fmt;

use gotalk_protocol::error_text;

/// Any error, boxed: what [`HandlerError::internal`] takes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The code of the errors the peer only sees as a reference.
pub(crate) const INTERNAL: &str = "internal";

/// A handler's failure, and what the peer may learn of it.
///
/// Every error converts into one with `?` (or `.into()`) as an internal error: the peer sees
/// only a reference, and the log has the rest. To tell the peer something, say so:
///
/// ```
/// use gotalk::{Handlers, HandlerError};
///
/// let mut handlers = Handlers::new();
/// handlers.handle("room.open", |_sock, name: String| async move {
///     if name.is_empty() {
///         // The peer gets the ErrorResult `[not_found] no such room`.
///         return Err(HandlerError::public("not_found", "no such room"));
///     }
///     // An error from `?` goes out as `[internal] internal error (ref 7f3a…)`.
///     let size: u64 = "12".parse()?;
///     Ok(size)
/// });
/// ```
///
/// It is not itself a [`std::error::Error`], which is what lets every error convert into it
/// (as `anyhow::Error` does).
pub struct HandlerError(Box<Kind>);

enum Kind {
    Public { code: Cow<'static, str>, message: String },
    Text(String),
    Retry(String),
    Internal(BoxError),
}

/// A handler's failure, ready for the wire.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The text of an ErrorResult.
    Error(String),
    /// The text of a RetryResult, or of an ErrorResult for a peer that cannot take one.
    Retry(String),
}

impl HandlerError {
    /// An error the peer may read: the ErrorResult `[code] message`, which Go and gotalk.js
    /// show as is, and this project's clients read back as a code and a message
    /// ([`Error::remote`](crate::Error::remote), and `err.code` in the browser).
    ///
    /// `code` is a short stable name, such as `not_found` or `unauthorized`: 1 to 64 bytes
    /// of `a`–`z`, `0`–`9`, `_`, `.` and `-`, starting with a letter. A code of another
    /// shape is a bug in the handler: the error goes out as an internal one, and the log
    /// says why.
    pub fn public(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Kind::Public { code: code.into(), message: message.into() })
    }

    /// An error whose text goes to the peer word for word, with no code: what Go and
    /// gotalk.js handlers send. For a peer that expects a given text.
    pub fn text(message: impl Into<String>) -> Self {
        Self::new(Kind::Text(message.into()))
    }

    /// Asks the peer to send the request again later: a RetryResult with `message`, after
    /// the connection's retry wait (see
    /// [`Config::retry_wait`](crate::Config::retry_wait)). A peer that cannot take a
    /// RetryResult (Go, gotalk.js) gets the ErrorResult `message` instead. What a rate limit
    /// answers. A notification has no reply: its handler's retry is logged and dropped.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(Kind::Retry(message.into()))
    }

    /// An error the peer must not read: it gets `[internal] internal error (ref …)`, and the
    /// log gets the reference, the op and `error`. What `?` makes of every other error, but
    /// for this crate's own errors about the peer's input (a stream's overflow, a payload
    /// past the limit), which go out as their text.
    pub fn internal(error: impl Into<BoxError>) -> Self {
        Self::new(Kind::Internal(error.into()))
    }

    fn new(kind: Kind) -> Self {
        Self(Box::new(kind))
    }

    /// The code the peer will see: a public error's, `internal` for an internal one, and
    /// none for [`text`](Self::text) and [`retry`](Self::retry).
    pub fn code(&self) -> Option<&str> {
        match &*self.0 {
            Kind::Public { code, .. } => Some(code),
            Kind::Internal(_) => Some(INTERNAL),
            Kind::Text(_) | Kind::Retry(_) => None,
        }
    }

    /// Whether the peer will see only a reference.
    pub fn is_internal(&self) -> bool {
        matches!(*self.0, Kind::Internal(_))
    }

    /// Whether this asks the peer to retry.
    pub fn is_retry(&self) -> bool {
        matches!(*self.0, Kind::Retry(_))
    }

    /// What goes on the wire for a failure of `op`; an internal error is logged here, with
    /// the reference the peer gets.
    pub(crate) fn into_failure(self, op: &str) -> Failure {
        match *self.0 {
            Kind::Public { code, message } if error_text::is_code(&code) => {
                Failure::Error(error_text::write(&code, &message))
            }
            Kind::Public { code, message } => {
                let why = format!("invalid error code {code:?} for public error {message:?}");
                internal(op, &why)
            }
            Kind::Text(message) => Failure::Error(message),
            Kind::Retry(message) => Failure::Retry(message),
            Kind::Internal(error) => internal(op, &Chain(&*error)),
        }
    }
}

/// The text a peer gets for a handler that panicked: an internal error like any other, its
/// reference logged with the panic's message (which may say anything about the server).
pub(crate) fn panicked(op: &str, panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a value that is not text");
    match internal(op, &format_args!("panicked: {what}")) {
        Failure::Error(text) | Failure::Retry(text) => text,
    }
}

/// Logs `error` under a fresh reference and gives the text the peer gets.
fn internal(op: &str, error: &dyn fmt::Display) -> Failure {
    let reference = format!("{:016x}", rand::random::<u64>());
    tracing::error!(op, reference = %reference, error = %error, "handler failed");
    Failure::Error(error_text::write(INTERNAL, &format!("internal error (ref {reference})")))
}

/// An error and its sources, as `outer: inner: innermost`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    /// An internal error, except this crate's own about the peer's input (a stream that
    /// overflowed its buffer or the memory budget, a payload past the limit), whose text is
    /// the peer's to read, as it was for a handler that passed it on.
    fn from(error: E) -> Self {
        match error.into().downcast::<crate::Error>() {
            Ok(error) if peer_caused(&error) => Self::text(error.to_string()),
            Ok(error) => Self::internal(error),
            Err(error) => Self::internal(error),
        }
    }
}

fn peer_caused(error: &crate::Error) -> bool {
    matches!(
        error,
        crate::Error::StreamOverflow(_)
            | crate::Error::OverBudget(_)
            | crate::Error::PayloadTooLarge { .. }
    )
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Kind::Public { code, message } => {
                f.debug_struct("Public").field("code", code).field("message", message).finish()
            }
            Kind::Text(message) => f.debug_tuple("Text").field(message).finish(),
            Kind::Retry(message) => f.debug_tuple("Retry").field(message).finish(),
            Kind::Internal(error) => f.debug_tuple("Internal").field(error).finish(),
        }
    }
}

/// What this side's logs may show: a public error as the peer reads it, an internal one with
/// its real text.
impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Kind::Public { code, message } => write!(f, "[{code}] {message}"),
            Kind::Text(message) | Kind::Retry(message) => f.write_str(message),
            Kind::Internal(error) => Chain(&**error).fmt(f),
        }
    }
}

/// An ErrorResult from the peer, read as a code and a message (see
/// [`Error::remote`](crate::Error::remote)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteError<'a> {
    text: &'a str,
    code: Option<&'a str>,
    message: &'a str,
}

impl<'a> RemoteError<'a> {
    /// Reads an ErrorResult's text.
    pub fn parse(text: &'a str) -> Self {
        let (code, message) = error_text::split(text);
        RemoteError { text, code, message }
    }

    /// The error's code, such as `not_found`; none when the peer sent plain text (as Go,
    /// gotalk.js, and this project's own limits do).
    pub fn code(&self) -> Option<&'a str> {
        self.code
    }

    /// The message, without the code.
    pub fn message(&self) -> &'a str {
        self.message
    }

    /// The whole text, as the peer sent it.
    pub fn text(&self) -> &'a str {
        self.text
    }
}

impl fmt::Display for RemoteError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

impl crate::Error {
    /// The peer's ErrorResult as a code and a message, when this is one
    /// ([`Error::Remote`](crate::Error::Remote)).
    ///
    /// ```
    /// let err = gotalk::Error::Remote("[not_found] no such room".into());
    /// let remote = err.remote().unwrap();
    /// assert_eq!(remote.code(), Some("not_found"));
    /// assert_eq!(remote.message(), "no such room");
    /// ```
    pub fn remote(&self) -> Option<RemoteError<'_>> {
        match self {
            crate::Error::Remote(text) => Some(RemoteError::parse(text)),
            _ => None,
        }
    }
}
