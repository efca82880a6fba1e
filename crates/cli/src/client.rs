//! `call`, `notify` and `listen`: the command line as a gotalk client.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gotalk::{Config, Error, Handlers, Sock};

use crate::terminal::{self, Lines};

/// The exit statuses of `call`, `notify` and `listen`, as `--help` shows them.
pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  another failure (the connection closed before the answer, say)
  2  bad input: the command line, a URL, JSON, a --ca file, a config file
  3  cannot reach a gotalk server: nothing listens there, another service answers, a
     WebSocket URL with no gotalk endpoint, a TLS certificate not trusted
  4  the server answered with an error
  5  timed out (--timeout)";

/// Bad input on the command line.
const USAGE: u8 = 2;
/// No gotalk server at the URL.
const UNREACHABLE: u8 = 3;
/// The peer answered with an error.
const REMOTE: u8 = 4;
/// `--timeout` passed.
const TIMEOUT: u8 = 5;

/// How the command failed, as its exit status (see [`EXIT_STATUS`]).
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn failure(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure { code, message: message.into() })
}

/// The exit status for an error: the [`Failure`]'s code, or 1.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Failure>().map_or(1, |f| f.code)
}

/// Where a gotalk server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Url {
    /// `tcp://host:port`, or a bare `host:port`.
    Tcp(String),
    /// `tls://host:port`.
    Tls { addr: String, host: String },
    /// `ws://host:port/path` or `wss://host:port/path`, the whole URL.
    Ws(String),
}

impl Url {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Url> {
        let bad = |why: &str| {
            failure(
                USAGE,
                format!(
                    "invalid url {text:?}: {why}; expected tcp://host:port, tls://host:port, \
                     ws://host:port/path or wss://host:port/path"
                ),
            )
        };
        let (scheme, rest) = text.split_once("://").unwrap_or(("tcp", text));
        if scheme == "ws" || scheme == "wss" {
            let uri: http::Uri = text.parse().map_err(|e| bad(&format!("{e}")))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
            return Ok(Url::Ws(text.to_owned()));
        }
        if scheme != "tcp" && scheme != "tls" {
            return Err(bad(&format!("unsupported scheme {scheme:?}")));
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if scheme == "tls" {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            return Ok(Url::Tls { addr: rest.to_owned(), host });
        }
        Ok(Url::Tcp(rest.to_owned()))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Tcp(addr) => write!(f, "tcp://{addr}"),
            Url::Tls { addr, .. } => write!(f, "tls://{addr}"),
            Url::Ws(url) => f.write_str(url),
        }
    }
}

/// Where to connect and how.
#[derive(clap::Args, Debug)]
pub(crate) struct Target {
    /// The server: tcp://host:port, tls://host:port, host:port, or a WebSocket endpoint such
    /// as ws://host:port/gotalk/ or wss://….
    url: String,
    /// For tls:// and wss:// urls: a PEM file with the certificate authorities to trust,
    /// instead of the system's (or those `SSL_CERT_FILE` and `SSL_CERT_DIR` name).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Give up after this many seconds, to connect and again to get the answer (exit
    /// status 5).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// For ws:// and wss:// urls: the Origin header to send. Default: the url's own origin
    /// (http://host:port for ws://host:port/…, https:// for wss://), which a gotalk-rs
    /// gateway takes for its own and Go's gotalk requires.
    #[arg(long, value_name = "ORIGIN", conflicts_with = "no_origin")]
    origin: Option<String>,
    /// For ws:// and wss:// urls: send no Origin header (Go's gotalk refuses that).
    #[arg(long)]
    no_origin: bool,
}

/// `gotalk call`.
#[derive(clap::Args, Debug)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// The operation.
    op: String,
    /// Its parameters as JSON; empty when left out.
    json: Option<String>,
    /// Bytes as they are, both ways: send the parameters without checking that they are
    /// JSON, and print the result without escaping its control characters. By default they
    /// are escaped as JSON escapes them (`\u001b`, `\r`), so a server cannot send commands to
    /// the terminal and a JSON result stays JSON.
    #[arg(long)]
    raw: bool,
}

/// `gotalk notify`.
#[derive(clap::Args, Debug)]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    target: Target,
    /// The notification's name.
    name: String,
    /// Its value as JSON; empty when left out.
    json: Option<String>,
    /// Send the value as it is, without checking that it is JSON.
    #[arg(long)]
    raw: bool,
}

/// `gotalk listen`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    target: Target,
    /// Print only these notifications (repeatable); all when left out.
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Print names and values as they are, control characters and line breaks included. By
    /// default they are escaped as JSON escapes them (`\u001b`, `\r`, `\n`), so each
    /// notification is one line and a peer cannot send commands to the terminal.
    #[arg(long)]
    raw: bool,
}

fn payload(json: Option<&str>, raw: bool) -> anyhow::Result<Bytes> {
    let Some(text) = json else { return Ok(Bytes::new()) };
    if !raw {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| failure(USAGE, format!("invalid JSON argument {text:?}: {e}")))?;
    }
    Ok(Bytes::copy_from_slice(text.as_bytes()))
}

async fn connect(target: &Target, handlers: Handlers) -> anyhow::Result<Sock> {
    let url = Url::parse(&target.url)?;
    let limit = timeout(target)?;
    let handlers = Arc::new(handlers);
    // --timeout is the deadline for the whole handshake: the library's own (10 s) would
    // otherwise end a longer one first, and a shorter one is ours to report.
    let config = Config::default().handshake_timeout(limit.saturating_add(Duration::from_secs(1)));
    let tls = || -> anyhow::Result<_> {
        let Some(ca) = target.ca.as_ref() else {
            return gotalk::tls::system_client_config()
                .map_err(|e| failure(USAGE, format!("{url}: {e}; give --ca PEM to trust")));
        };
        let pem =
            std::fs::read(ca).map_err(|e| failure(USAGE, format!("--ca {}: {e}", ca.display())))?;
        gotalk::tls::client_config(&pem)
            .map_err(|e| failure(USAGE, format!("--ca {}: {e}", ca.display())))
    };
    let mut connector = gotalk::ws::Connector::new();
    match (&target.origin, target.no_origin, &url) {
        (None, false, _) => {}
        (_, _, Url::Tcp(_) | Url::Tls { .. }) => {
            return Err(failure(
                USAGE,
                format!("{url}: an Origin is sent only to ws:// and wss:// urls"),
            ));
        }
        (Some(origin), _, _) => {
            http::HeaderValue::from_str(origin)
                .map_err(|_| failure(USAGE, format!("invalid --origin {origin:?}")))?;
            connector = connector.origin(origin);
        }
        (None, true, _) => connector = connector.no_origin(),
    }
    let connecting = async {
        match &url {
            Url::Tcp(addr) => gotalk::tcp::connect(addr.as_str(), handlers, config).await,
            Url::Tls { addr, host } => {
                gotalk::tcp::connect_tls(addr.as_str(), host, tls()?, handlers, config).await
            }
            Url::Ws(ws) if ws.starts_with("wss:") => {
                connector.tls(tls()?).connect(ws, handlers, config).await
            }
            Url::Ws(ws) => connector.connect(ws, handlers, config).await,
        }
        .map_err(|e| connect_error(&url, &e))
    };
    tokio::time::timeout(limit, connecting).await.map_err(|_| {
        // A gotalk server sends its version at once and a gateway answers the upgrade at
        // once, so silence is a host that does not answer or a service that waits for more
        // (an HTTP port reached over tcp://).
        let hint = match url {
            Url::Ws(_) => "no answer to the WebSocket upgrade",
            Url::Tcp(_) | Url::Tls { .. } => "no gotalk handshake; is it a gotalk TCP port?",
        };
        failure(TIMEOUT, format!("timed out after {limit:?} connecting to {url} ({hint})"))
    })?
}

/// Why connecting to `url` failed, in one line that names it and says what to change.
fn connect_error(url: &Url, e: &Error) -> anyhow::Error {
    use gotalk::CloseReason;
    let message = match e {
        Error::Connect(why) => match url {
            Url::Ws(ws) => ws_connect_error(ws, why),
            _ if why.contains("invalid peer certificate") => format!(
                "cannot connect to {url}: {why} (give --ca PEM to trust the authority that \
                 signed the server's certificate)"
            ),
            Url::Tls { .. } if why.contains("corrupt message") => {
                format!("cannot connect to {url}: {why} (not a TLS port? a plain one takes tcp://)")
            }
            _ => format!("cannot connect to {url}: {}", refused_hint(why)),
        },
        Error::Closed(CloseReason::HandshakeTimeout(limit)) => {
            return failure(
                TIMEOUT,
                format!("timed out after {limit:?} waiting for {url}'s gotalk handshake"),
            );
        }
        Error::Closed(
            reason @ (CloseReason::UnsupportedVersion(_) | CloseReason::InvalidMessage(_)),
        ) => format!(
            "{url} is not a gotalk server: it answered the handshake with something else \
             ({reason}); check the port{}",
            not_gotalk_hint(url)
        ),
        Error::Closed(reason) => format!(
            "{url} closed the connection during the gotalk handshake ({reason}); check the \
             port{}",
            not_gotalk_hint(url)
        ),
        other => format!("cannot connect to {url}: {other}"),
    };
    failure(UNREACHABLE, message)
}

/// Where a gotalk server's other endpoints are, for a URL that reached something else.
fn not_gotalk_hint(url: &Url) -> &'static str {
    match url {
        Url::Tcp(_) => {
            " (gotalk over WebSocket is ws://host:port/gotalk/; a TLS port needs tls://)"
        }
        Url::Tls { .. } | Url::Ws(_) => "",
    }
}

fn refused_hint(why: &str) -> String {
    if why.to_ascii_lowercase().contains("connection refused") {
        format!("{why}: nothing listens on that port")
    } else {
        why.to_owned()
    }
}

/// A WebSocket connection that failed: a path with no gotalk endpoint (the server answered
/// a page, not an upgrade), or a port that does not speak HTTP.
fn ws_connect_error(ws: &str, why: &str) -> String {
    let uri: Option<http::Uri> = ws.parse().ok();
    let path = uri.as_ref().map_or("/", |u| u.path());
    if let Some(answer) = why.strip_prefix(gotalk::ws::UPGRADE_REFUSED) {
        let status = answer.get(..3).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        // The gateway's own refusals (origin, host, connection limits) say why themselves.
        let refusal = matches!(status, 401 | 403 | 421 | 429 | 503);
        if !refusal && path != "/gotalk/" {
            let suggestion = uri
                .as_ref()
                .and_then(|u| Some(format!("{}://{}/gotalk/", u.scheme_str()?, u.authority()?)))
                .map(|url| format!(": try {url}"))
                .unwrap_or_default();
            return format!(
                "{ws} is not a gotalk WebSocket endpoint (the server answered {answer}); \
                 `gotalk serve` has it at the path /gotalk/{suggestion}"
            );
        }
        return format!("cannot connect to {ws}: the server answered {answer}");
    }
    if why.contains("httparse error") || why.starts_with("websocket handshake: HTTP") {
        return format!(
            "{ws} did not answer as an HTTP server ({why}); check the port (a gotalk TCP port \
             takes tcp://host:port)"
        );
    }
    if why.contains("invalid peer certificate") {
        return format!(
            "cannot connect to {ws}: {why} (give --ca PEM to trust the authority that signed \
             the server's certificate)"
        );
    }
    format!("cannot connect to {ws}: {}", refused_hint(why))
}

/// `--timeout` as a duration.
fn timeout(target: &Target) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(target.timeout)
        .map_err(|_| failure(USAGE, format!("invalid --timeout {}", target.timeout)))
}

async fn within<T>(
    target: &Target,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let limit = timeout(target)?;
    tokio::time::timeout(limit, work).await.map_err(|_| {
        failure(TIMEOUT, format!("timed out after {limit:?} waiting for the answer"))
    })?
}

fn request_error(e: Error) -> anyhow::Error {
    match e {
        Error::Remote(message) => failure(REMOTE, format!("error from server: {message}")),
        other => failure(1, other.to_string()),
    }
}

pub(crate) async fn call(args: CallArgs) -> anyhow::Result<()> {
    let params = payload(args.json.as_deref(), args.raw)?;
    let sock = connect(&args.target, Handlers::new()).await?;
    let result = within(&args.target, async {
        sock.buffer_request(&args.op, params).await.map_err(request_error)
    })
    .await;
    sock.close();
    let result = result?;
    let mut out = std::io::stdout().lock();
    let written = if args.raw {
        out.write_all(&result).and_then(|()| out.write_all(b"\n"))
    } else {
        writeln!(out, "{}", terminal::escape_bytes(&result, Lines::Keep))
    };
    written.and_then(|()| out.flush()).map_err(|e| failure(1, format!("writing the result: {e}")))
}

pub(crate) async fn notify(args: NotifyArgs) -> anyhow::Result<()> {
    let value = payload(args.json.as_deref(), args.raw)?;
    let sock = connect(&args.target, Handlers::new()).await?;
    sock.buffer_notify(&args.name, value).await.map_err(request_error)?;
    // end() flushes the notification before closing.
    sock.end().await;
    Ok(())
}

pub(crate) async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let wanted = Arc::new(args.names);
    let raw = args.raw;
    let mut handlers = Handlers::new();
    handlers.fallback_notification(move |_sock, name, payload| {
        let wanted = wanted.clone();
        async move {
            if wanted.is_empty() || wanted.contains(&name) {
                let line = if raw {
                    [name.as_bytes(), b" ", &payload, b"\n"].concat()
                } else {
                    let name = terminal::escape(&name, Lines::Escape);
                    format!("{name} {}\n", terminal::escape_bytes(&payload, Lines::Escape))
                        .into_bytes()
                };
                // One write per line, so lines from concurrent handlers never interleave. A
                // reader that went away (a closed pipe) is no reason to stop listening.
                let _ = std::io::stdout().lock().write_all(&line);
            }
        }
    });
    let sock = connect(&args.target, handlers).await?;
    eprintln!("listening on {} (ctrl-c to stop)", args.target.url);
    tokio::select! {
        reason = sock.closed() => Err(failure(1, format!("connection closed: {reason}"))),
        _ = tokio::signal::ctrl_c() => {
            sock.close();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(Url::parse("tcp://127.0.0.1:1235").unwrap(), Url::Tcp("127.0.0.1:1235".into()));
        assert_eq!(Url::parse("localhost:1235").unwrap(), Url::Tcp("localhost:1235".into()));
        assert_eq!(
            Url::parse("tls://example.com:443/").unwrap(),
            Url::Tls { addr: "example.com:443".into(), host: "example.com".into() }
        );
        assert_eq!(
            Url::parse("ws://127.0.0.1:1234/gotalk/").unwrap(),
            Url::Ws("ws://127.0.0.1:1234/gotalk/".into())
        );
        assert!(matches!(Url::parse("wss://example.com/gotalk/").unwrap(), Url::Ws(_)));
        for bad in [
            "http://x:1",
            "ws:///gotalk/",
            "ws://bad host/",
            "tcp://nohost",
            "tcp://:80",
            "tcp://x:99999",
            "tcp://x:port",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert_eq!(exit_code(&e), 2, "{bad}");
            assert!(e.to_string().contains("invalid url"), "{e}");
        }
    }

    #[test]
    fn checks_json() {
        assert_eq!(payload(Some("{\"a\":1}"), false).unwrap(), Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(payload(None, false).unwrap(), Bytes::new());
        let e = payload(Some("{nope"), false).unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert!(e.to_string().contains("invalid JSON argument"));
        assert_eq!(payload(Some("{nope"), true).unwrap(), Bytes::from_static(b"{nope"));
    }
}
