//! `gotalk serve`: the gateway on embedded defaults: gotalk over WebSocket on HTTP, gotalk over
//! TCP beside it, one registry for both with the relay on.
//!
//! [`run`] takes the registry and the site to serve, so an application (the demo, the test
//! servers) runs its operations behind the same flags and listeners.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use gotalk::listen::ListenerLimits;
use gotalk::metrics::LivenessCounts;
use gotalk::relay::BusState;
use gotalk::{Config, Connections, Handlers, LivenessConfig};
use gotalk_gateway::Assets;
use gotalk_gateway::{Gateway, Metrics};
use http::StatusCode;
use serde::Serialize;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// `gotalk serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where HTTP listens: gotalk over WebSocket at `/gotalk/`, the site (if any) at `/`.
    #[arg(long, default_value = "127.0.0.1:1234", value_name = "ADDR")]
    http: String,
    /// Where gotalk over TCP listens.
    #[arg(long, default_value = "127.0.0.1:1235", value_name = "ADDR")]
    tcp: String,
    /// Serve TLS (https, wss and TLS over TCP) with this PEM certificate chain (needs
    /// --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between checks of --tls-cert and --tls-key for a new certificate, put in use
    /// for new connections without a restart; 0 checks only on SIGHUP, which always reloads.
    /// A file that cannot be used keeps the certificate in use, and is logged.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    tls_reload_interval: Duration,
    /// Ask TLS clients (over TCP, and browsers over https and wss) for a certificate, and
    /// verify one they present against the CA certificates in this PEM file; handlers see it
    /// as `Sock::peer_certificate`. Clients without one may still connect unless
    /// --client-cert-required (needs --tls-cert).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Refuse TLS clients that present no certificate --client-ca verifies: their TLS
    /// handshake fails.
    #[arg(long, requires = "client_ca")]
    client_cert_required: bool,
    /// Also let pages from this origin open WebSockets (`https://app.example`, `null`, or
    /// `*` for any). Pages from the server's own origin and non-browser clients are always
    /// allowed. Repeat for several.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    allow_origins: Vec<String>,
    /// Also answer requests for this host name (`chat.example`, `*.chat.example`, an IP
    /// address, or `*` for any), against DNS rebinding. On a loopback address only loopback
    /// names (localhost, *.localhost, 127.x, [::1]) are answered by default, elsewhere any
    /// until one is given. Others get 421. Behind a proxy on this machine, give the public
    /// name. Repeat for several.
    #[arg(long = "allow-host", value_name = "NAME", value_parser = parse_host)]
    allow_hosts: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many connections may be open at once, per transport.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// How many connections one IP address (IPv6: one /64) may have open at once, per
    /// transport. Behind a proxy, set it to --max-connections: every client shares the
    /// proxy's address.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    max_connections_per_addr: usize,
    /// Of --max-connections, how many places are kept for addresses holding few connections:
    /// near full, an address holding a tenth of this or more is refused first. Default: a
    /// tenth of --max-connections, or 0 when --max-connections-per-addr is as large.
    #[arg(long, value_name = "N")]
    connection_reserve: Option<usize>,
    /// Seconds to let requests in flight finish at shutdown.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    shutdown_timeout: f64,
}

impl Args {
    /// The relay these flags describe: its limits, and the bus `--redis` or `--nats` names
    /// (without either, the one-process bus). An application that uses the relay itself (its
    /// groups, say) makes it here and serves it with [`run_with`].
    ///
    /// # Errors
    /// A flag out of range, or a bus this build cannot reach.
    pub async fn relay(&self) -> anyhow::Result<gotalk::relay::Relay> {
        let relay = self.relay.relay()?;
        match self.cluster.bus().await? {
            Some(bus) => Ok(relay.bus(bus)),
            None => Ok(relay),
        }
    }

    /// The limits every listener of the command takes: TCP, HTTP and WebSocket.
    fn listener_limits(&self) -> anyhow::Result<ListenerLimits> {
        let mut limits = ListenerLimits::default()
            .max_connections(self.max_connections)
            .max_connections_per_addr(self.max_connections_per_addr)
            .shutdown_timeout(seconds(self.shutdown_timeout)?);
        if let Some(reserve) = self.connection_reserve {
            limits = limits.connection_reserve(reserve);
        }
        Ok(limits)
    }
}

fn parse_origin(text: &str) -> Result<String, String> {
    if gotalk_gateway::valid_origin(text) {
        Ok(text.to_owned())
    } else {
        Err("expected scheme://host[:port], null or *".into())
    }
}

fn parse_host(text: &str) -> Result<String, String> {
    if gotalk_gateway::valid_host(text) {
        Ok(text.to_owned())
    } else {
        Err("expected a host name without port (example.com, *.example.com), an IP address \
             or *"
            .into())
    }
}

/// Per-connection limits, shared by every server the command runs.
#[derive(clap::Args, Debug)]
pub(crate) struct LimitArgs {
    /// Requests handled at once per connection.
    #[arg(long, value_name = "N")]
    request_limit: Option<u32>,
    /// Streaming requests handled at once per connection.
    #[arg(long, value_name = "N")]
    stream_limit: Option<u32>,
    /// The largest payload accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_payload: Option<u32>,
    /// Seconds without a byte from a peer before it is disconnected; 0 turns it off.
    #[arg(long, value_name = "SECONDS")]
    read_timeout: Option<f64>,
    /// Seconds a message may take from its first byte to its last; 0 turns it off.
    #[arg(long, value_name = "SECONDS")]
    frame_timeout: Option<f64>,
    /// Seconds the requests an application's handlers send to their peers wait for a result
    /// before failing as timed out; 0 (the default) waits until the connection closes.
    #[arg(long, value_name = "SECONDS")]
    request_timeout: Option<f64>,
    /// Seconds between heartbeats; 0 sends none.
    #[arg(long, value_name = "SECONDS")]
    heartbeat: Option<f64>,
    /// The wait a RetryResult asks for past --request-limit or --stream-limit: a fixed
    /// `SECONDS`, or drawn from `MIN..MAX` (default 0.5..5).
    #[arg(long, value_name = "SECONDS|MIN..MAX", value_parser = parse_wait)]
    retry_wait: Option<(f64, f64)>,
    /// Dead-peer detection to start from: `gateway` (a probe after 15 s of silence, dead
    /// after two unanswered: 45 s at most), `libvirt`, `ouroboros`, or `off`.
    #[arg(long, value_name = "PRESET", value_parser = parse_liveness)]
    liveness: Option<LivenessConfig>,
    /// Seconds of silence before a liveness probe; 0 sends none.
    #[arg(long, value_name = "SECONDS")]
    probe_interval: Option<f64>,
    /// Probes left unanswered before the peer is declared dead.
    #[arg(long, value_name = "N")]
    probe_misses: Option<u32>,
    /// Bytes every connection together may hold on its peers' behalf (default: a quarter of
    /// the machine's memory, at most 512 MiB).
    #[arg(long, value_name = "BYTES")]
    memory_budget: Option<usize>,
    /// Bytes one connection may hold on its peer's behalf (default: 4 times --max-payload).
    #[arg(long, value_name = "BYTES")]
    connection_budget: Option<usize>,
}

fn parse_liveness(text: &str) -> Result<LivenessConfig, String> {
    match text {
        "gateway" => Ok(LivenessConfig::gateway_default()),
        "libvirt" => Ok(LivenessConfig::libvirt()),
        "ouroboros" => Ok(LivenessConfig::ouroboros()),
        "off" => Ok(LivenessConfig::disabled()),
        _ => Err("expected gateway, libvirt, ouroboros or off".into()),
    }
}

fn parse_wait(text: &str) -> Result<(f64, f64), String> {
    let number = |s: &str| s.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
    match text.split_once("..") {
        Some((min, max)) => Ok((number(min)?, number(max)?)),
        None => number(text).map(|s| (s, s)),
    }
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid number of seconds: {s}"))
}

impl LimitArgs {
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::default();
        // The flags for single liveness settings (--read-timeout, --heartbeat) win over the
        // preset whatever the order: the config keeps them apart.
        let mut liveness = self.liveness.unwrap_or_default();
        if let Some(s) = self.probe_interval {
            liveness.interval = Some(seconds(s)?).filter(|d| !d.is_zero());
        }
        if let Some(n) = self.probe_misses {
            liveness.max_unacked = n;
        }
        config = config.liveness(liveness).context("invalid liveness settings")?;
        if let Some(s) = self.read_timeout {
            config = config.read_timeout(Some(seconds(s)?).filter(|d| !d.is_zero()));
        }
        if let Some(s) = self.heartbeat {
            config = config.heartbeat_interval(Some(seconds(s)?));
        }
        if let Some(n) = self.request_limit {
            config = config.request_limit(n);
        }
        if let Some(n) = self.stream_limit {
            config = config.stream_limit(n);
        }
        if let Some(n) = self.max_payload {
            config = config.max_payload(n);
        }
        if let Some(s) = self.frame_timeout {
            config = config.frame_timeout(Some(seconds(s)?).filter(|d| !d.is_zero()));
        }
        if let Some(s) = self.request_timeout {
            config = config.request_timeout(Some(seconds(s)?).filter(|d| !d.is_zero()));
        }
        if let Some((min, max)) = self.retry_wait {
            config = config.retry_wait(seconds(min)?, seconds(max)?);
        }
        if let Some(bytes) = self.memory_budget {
            config = config.memory_budget(gotalk::MemoryBudget::new(bytes));
        }
        if let Some(bytes) = self.connection_budget {
            config = config.connection_budget(bytes);
        }
        Ok(config)
    }
}

/// The relay's limits: every connection gets an id and can message others by id and topic.
#[derive(clap::Args, Debug)]
pub(crate) struct RelayArgs {
    /// The largest relayed body, in bytes of JSON [default: 65536].
    #[arg(long, value_name = "BYTES")]
    relay_max_body: Option<usize>,
    /// The bytes one recipient's relay queue may hold [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    relay_queue: Option<usize>,
    /// Seconds a relay recipient may take no message before it is disconnected [default: 10].
    #[arg(long, value_name = "SECONDS")]
    relay_stall: Option<f64>,
    /// Relayed messages one connection may have on their way to other instances at once
    /// [default: 64].
    #[arg(long, value_name = "N")]
    relay_in_flight: Option<usize>,
    /// Bytes of relayed messages one connection may have on their way to other instances at
    /// once [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    relay_in_flight_bytes: Option<usize>,
    /// Groups (chat rooms) one connection may be in at once [default: 256].
    #[arg(long, value_name = "N")]
    relay_max_groups: Option<usize>,
    /// Seconds the session of a peer that went away is kept for it to resume: its id, its
    /// groups and the messages sent to it meanwhile (within --relay-queue) [default: 0, off].
    #[arg(long, value_name = "SECONDS")]
    resume_grace: Option<f64>,
    /// Sessions of peers that went away this process keeps at once; past it a peer that goes
    /// away is forgotten at once [default: 10000].
    #[arg(long, value_name = "N")]
    resume_max_detached: Option<usize>,
}

impl RelayArgs {
    pub(crate) fn relay(&self) -> anyhow::Result<gotalk::relay::Relay> {
        let mut relay = gotalk::relay::Relay::new();
        if let Some(bytes) = self.relay_max_body {
            relay = relay.max_body(bytes);
        }
        if let Some(bytes) = self.relay_queue {
            relay = relay.queue_bytes(bytes);
        }
        if let Some(s) = self.relay_stall {
            relay = relay.stall_timeout(seconds(s)?);
        }
        if let Some(n) = self.relay_in_flight {
            relay = relay.max_in_flight(n);
        }
        if let Some(bytes) = self.relay_in_flight_bytes {
            relay = relay.max_in_flight_bytes(bytes);
        }
        if let Some(n) = self.relay_max_groups {
            relay = relay.max_groups(n);
        }
        if let Some(s) = self.resume_grace {
            relay = relay.resume_grace(seconds(s)?);
        }
        if let Some(n) = self.resume_max_detached {
            relay = relay.max_detached(n);
        }
        Ok(relay)
    }
}

/// The bus that makes several `gotalk serve` processes one cluster behind a load balancer:
/// relayed messages, groups and presence reach every instance through it.
#[derive(clap::Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Join the instances that share this Redis in one cluster:
    /// `redis://[user:password@]host:port[/db]` (`rediss://` for TLS), or a Redis Cluster
    /// (sharded pub/sub, Redis 7+): `redis+cluster://[user:password@]host:port,host:port`.
    #[arg(long, value_name = "URL", conflicts_with = "nats")]
    redis: Option<String>,
    /// Join the instances that share this NATS in one cluster:
    /// `nats://[user:password@]host:port` (`tls://` for TLS).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// What every channel name on the bus begins with, so several clusters can share one bus:
    /// letters, digits, `-` and `_`.
    #[arg(long, default_value = "gotalk", value_name = "PREFIX", value_parser = parse_prefix)]
    cluster_prefix: String,
    #[command(flatten)]
    tuning: ClusterTuning,
}

/// The cluster bus's timings and bounds; each flag left out keeps the library's default.
#[derive(clap::Args, Debug, Default)]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
struct ClusterTuning {
    /// Seconds a relay to a peer on another instance waits for its answer before it ends
    /// as "relay timeout" [default: 1].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_relay_timeout: Option<Duration>,
    /// Seconds each publish and subscribe may take before the connection to the bus is
    /// thrown away and another made [default: 0.25].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_call_timeout: Option<Duration>,
    /// Seconds connecting to the bus (and resubscribing after it) may take [default: 2].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_connect_timeout: Option<Duration>,
    /// Seconds before the first reconnect attempt's random delay; each next one doubles, up
    /// to --cluster-backoff-max [default: 0.1].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_backoff_min: Option<Duration>,
    /// The longest random delay between reconnect attempts, in seconds [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_backoff_max: Option<Duration>,
    /// Seconds with nothing from the bus before the instance sends itself a probe through it
    /// [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_probe: Option<Duration>,
    /// Seconds the probe may take to come back before the connection is taken as dead
    /// [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_probe_timeout: Option<Duration>,
    /// Seconds between the instance's heartbeats to the others [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_heartbeat: Option<Duration>,
    /// Seconds after its last heartbeat another instance's members are forgotten; more than
    /// --cluster-heartbeat [default: 15].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_presence_expiry: Option<Duration>,
    /// Seconds a group's first member here waits for another instance to send the group's
    /// kept messages; just after the start, also the wait to hear which instances have
    /// members [default: 0.25].
    #[arg(long, value_name = "SECONDS", value_parser = parse_positive_seconds)]
    cluster_history_timeout: Option<Duration>,
    /// Seconds the instance stays subscribed to a group after its last member here left
    /// [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    cluster_group_linger: Option<Duration>,
    /// Bytes of messages handed to the bus and not yet done with; past it relays answer
    /// "relay unavailable" and publishes are dropped [default: 8388608].
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    cluster_outbound_bytes: Option<usize>,
    /// Relays to other instances that may wait for their answers at once; past it they
    /// answer "relay unavailable" [default: 16384].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    cluster_max_pending: Option<usize>,
    /// Messages from the bus that may wait to be handled; past it they are dropped and
    /// counted [default: 4096].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    cluster_incoming_queue: Option<usize>,
    /// Channels one subscribe asks for when resubscribing after a reconnect [default: 1000].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    cluster_subscribe_batch: Option<usize>,
    /// Calls one Redis connection may have waiting to be written, and requests waiting for
    /// their answers (each); past it a call fails at once [default: 65536].
    #[arg(long, value_name = "N", value_parser = parse_count, requires = "redis")]
    redis_max_pending: Option<usize>,
    /// Messages the NATS client may hold before writing them; a full queue throws the
    /// connection away [default: 8192].
    #[arg(long, value_name = "N", value_parser = parse_count, requires = "nats")]
    nats_queue: Option<usize>,
}

impl ClusterArgs {
    /// The bus these flags name, connected: none for one process.
    #[cfg(feature = "cluster")]
    async fn bus(&self) -> anyhow::Result<Option<Arc<dyn gotalk::relay::Bus>>> {
        use gotalk_cluster::{ClusterBus, NatsLink, RedisLink};
        let settings = self.settings()?;
        let tuning = &self.tuning;
        let bus = match (&self.redis, &self.nats) {
            (Some(url), _) => {
                let mut link = RedisLink::new(url).context("--redis")?;
                if let Some(wait) = tuning.cluster_connect_timeout {
                    link = link.connect_timeout(wait);
                }
                if let Some(n) = tuning.redis_max_pending {
                    link = link.max_pending(n);
                }
                ClusterBus::start(link, settings).await.context("--redis")?
            }
            (None, Some(url)) => {
                let mut link = NatsLink::new(url).context("--nats")?;
                if let Some(wait) = tuning.cluster_connect_timeout {
                    link = link.connect_timeout(wait);
                }
                if let Some(n) = tuning.nats_queue {
                    link = link.queue(n);
                }
                ClusterBus::start(link, settings).await.context("--nats")?
            }
            (None, None) => return Ok(None),
        };
        tracing::info!(kind = bus.metrics().kind, instance = %bus.instance(), "joined the cluster");
        Ok(Some(bus))
    }

    /// The cluster bus's settings these flags describe.
    #[cfg(feature = "cluster")]
    fn settings(&self) -> anyhow::Result<gotalk_cluster::ClusterSettings> {
        let t = &self.tuning;
        use gotalk_cluster::ClusterSettings as C;
        let mut s = C::default().prefix(&self.cluster_prefix);
        if let Some(d) = t.cluster_relay_timeout {
            s = s.relay_timeout(d);
        }
        if let Some(d) = t.cluster_call_timeout {
            s = s.call_timeout(d);
        }
        if let Some(d) = t.cluster_connect_timeout {
            s = s.connect_timeout(d);
        }
        let (min, max) = (
            t.cluster_backoff_min.unwrap_or(C::DEFAULT_BACKOFF_MIN),
            t.cluster_backoff_max.unwrap_or(C::DEFAULT_BACKOFF_MAX),
        );
        if min > max {
            anyhow::bail!(
                "--cluster-backoff-min ({}) is more than --cluster-backoff-max ({})",
                min.as_secs_f64(),
                max.as_secs_f64()
            );
        }
        s = s.backoff(min, max);
        s = s.probe(
            t.cluster_probe.unwrap_or(C::DEFAULT_PROBE_IDLE),
            t.cluster_probe_timeout.unwrap_or(C::DEFAULT_PROBE_TIMEOUT),
        );
        let beat = t.cluster_heartbeat.unwrap_or(C::DEFAULT_HEARTBEAT);
        let expiry = t.cluster_presence_expiry.unwrap_or(C::DEFAULT_PRESENCE_EXPIRY);
        // Rows expiring between two heartbeats would make live instances' members blink.
        if expiry <= beat {
            anyhow::bail!(
                "--cluster-presence-expiry ({}) must be more than --cluster-heartbeat ({})",
                expiry.as_secs_f64(),
                beat.as_secs_f64()
            );
        }
        s = s.heartbeat(beat).presence_expiry(expiry);
        if let Some(d) = t.cluster_history_timeout {
            s = s.history_timeout(d);
        }
        if let Some(d) = t.cluster_group_linger {
            s = s.group_linger(d);
        }
        if let Some(n) = t.cluster_outbound_bytes {
            s = s.outbound_bytes(n);
        }
        if let Some(n) = t.cluster_max_pending {
            s = s.max_pending(n);
        }
        if let Some(n) = t.cluster_incoming_queue {
            s = s.incoming_queue(n);
        }
        if let Some(n) = t.cluster_subscribe_batch {
            s = s.subscribe_batch(n);
        }
        Ok(s)
    }

    /// Refuses a bus this build has no client for.
    #[cfg(not(feature = "cluster"))]
    async fn bus(&self) -> anyhow::Result<Option<Arc<dyn gotalk::relay::Bus>>> {
        let flag = match (&self.redis, &self.nats) {
            (Some(_), _) => "--redis",
            (None, Some(_)) => "--nats",
            (None, None) => return Ok(None),
        };
        anyhow::bail!("cannot use {flag}: gotalk was built without cluster support")
    }
}

/// Seconds as a duration: a finite number, not negative.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from_secs_f64(s).map_err(|_| format!("{text:?}: not a number of seconds"))
}

/// Seconds as a duration, more than zero: a zero deadline or period would fail or spin.
fn parse_positive_seconds(text: &str) -> Result<Duration, String> {
    let d = parse_seconds(text)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// A count or size of at least 1: a bound of 0 would refuse everything.
fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    // A channel name is the prefix and checked parts joined by the bus's separator: the
    // prefix must hold no separator or wildcard of either bus, as a group name.
    match gotalk::relay::Group::new(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err("expected 1 to 64 bytes of letters, digits, '-' and '_'".into()),
    }
}

/// Open connections per transport, and what liveness saw on each, as JSON.
#[derive(Serialize)]
struct Stats {
    tcp: usize,
    websocket: usize,
    liveness: PerTransport<LivenessCounts>,
    memory: Memory,
    /// The cluster bus's figures (`up`, `reconnects`, relay outcomes, …); absent for one
    /// process.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    bus: std::collections::BTreeMap<&'static str, u64>,
}

/// The process memory budget's use, in bytes.
#[derive(Serialize)]
struct Memory {
    capacity: usize,
    used: usize,
    peak: usize,
}

#[derive(Serialize)]
struct PerTransport<T> {
    tcp: T,
    websocket: T,
}

/// The answer to `/readyz`: whether a load balancer should send this instance new
/// connections. Not while the bus between instances is down, since its peers would reach only
/// this instance's; one process's bus is always up.
fn readiness(bus: &BusState) -> (StatusCode, &'static str) {
    if bus.up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded: bus down")
    }
}

/// The HTTP app: the demo site at `/`, the gateway at `/gotalk/`, `/stats`, `/metrics`
/// (Prometheus), `/readyz` (is the bus up) and `/healthz` (the process answers: a liveness
/// check that a bus outage must not fail, or every instance would be restarted at once). The
/// gateway's host check covers the whole site, so a rebinding page reads nothing from it.
fn app(
    gateway: &Gateway,
    tcp: Connections,
    budget: gotalk::MemoryBudget,
    relay: &gotalk::relay::Relay,
    metrics: &Metrics,
    site: Option<Assets>,
) -> Router {
    let bus = relay.state();
    let figures = relay.clone();
    let hosts = gateway.clone();
    let check_host = middleware::from_fn(move |request: Request, next: Next| {
        let checked = hosts.check_host(&request);
        async move {
            match checked {
                Ok(()) => next.run(request).await,
                Err(refusal) => refusal.into_response(),
            }
        }
    });
    let ws = gateway.connections();
    let stats = get(move || {
        let stats = Stats {
            tcp: tcp.len(),
            websocket: ws.len(),
            liveness: PerTransport { tcp: tcp.liveness(), websocket: ws.liveness() },
            memory: Memory {
                capacity: budget.capacity(),
                used: budget.used(),
                peak: budget.peak(),
            },
            bus: figures.bus_figures().into_iter().collect(),
        };
        let json = serde_json::to_string(&stats).unwrap_or_default();
        async move { ([(http::header::CONTENT_TYPE, "application/json")], json) }
    });
    let ready = get(move || {
        let answer = readiness(&bus.borrow());
        async move { answer }
    });
    let router = Router::new()
        .route("/stats", stats.layer(CompressionLayer::new()))
        .route("/metrics", metrics.handler().layer(CompressionLayer::new()))
        .route("/readyz", ready)
        .route("/healthz", get(|| async { "ok" }))
        .nest_service("/gotalk", gateway.router());
    let router = match site {
        Some(site) => router.fallback_service(site.into_router()),
        None => router,
    };
    router
        .layer(check_host)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, HTTP_TIMEOUT))
        .layer(TraceLayer::new_for_http())
}

/// Resolves on ctrl-c or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// How long one plain HTTP request may take. WebSockets are not affected: their upgrade
/// response is immediate.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `handlers` (with the relay added) over WebSocket and TCP, and `site` at `/`, as
/// `args` say, until ctrl-c or SIGTERM.
pub async fn run(args: Args, handlers: Handlers, site: Option<Assets>) -> anyhow::Result<()> {
    let relay = args.relay().await?;
    run_with(args, relay, handlers, site).await
}

/// [`run`] with the relay the application holds too, made by [`Args::relay`].
pub async fn run_with(
    args: Args,
    relay: gotalk::relay::Relay,
    mut handlers: Handlers,
    site: Option<Assets>,
) -> anyhow::Result<()> {
    // Each transport may hold --max-connections sockets.
    let files = crate::nofile::raise_open_file_limit();
    let wanted = 2 * args.max_connections as u64 + 64;
    if files < wanted {
        tracing::warn!(
            open_files = files,
            wanted,
            "the open-file limit is below what --max-connections allows; raise the hard \
             limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections"
        );
    }
    let config = args.limits.config()?;
    let budget = config.budget().clone();
    let limits = args.listener_limits()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let poll = Some(args.tls_reload_interval).filter(|d| !d.is_zero());
            let clients = match &args.client_ca {
                Some(ca) => Some((
                    std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
                    args.client_cert_required,
                )),
                None => None,
            };
            Some(crate::certs::server_config(cert, key, poll, clients)?)
        }
        _ => None,
    };
    handlers.relay(relay.clone());
    let metrics = Metrics::new();
    handlers.extension(metrics.clone());
    let handlers = Arc::new(handlers);

    // Each transport counts its own connections under the same limits.
    let mut tcp = gotalk::tcp::Server::new(handlers.clone(), config.clone()).limits(limits);
    let mut gateway = Gateway::new(handlers, config).limits(limits);
    for origin in &args.allow_origins {
        gateway = gateway.allow_origin(origin);
    }
    for host in &args.allow_hosts {
        gateway = gateway.allow_host(host);
    }
    metrics
        .connections("tcp", tcp.connections())
        .connections("websocket", gateway.connections())
        .budget(budget.clone())
        .relay(relay.clone());
    let has_site = site.is_some();
    let app = app(&gateway, tcp.connections(), budget, &relay, &metrics, site);
    let mut http = gotalk_gateway::http::Server::new(app).limits(limits);
    if let Some(tls) = &tls {
        tcp = tcp.tls(tls.clone());
        http = http.tls(tls.clone());
    }

    let http_listener = TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let tcp_listener = TcpListener::bind(&args.tcp)
        .await
        .with_context(|| format!("cannot listen on {}", args.tcp))?;
    let (http_addr, tcp_addr) = (http_listener.local_addr()?, tcp_listener.local_addr()?);
    let (web, ws, raw) =
        if tls.is_some() { ("https", "wss", "tls") } else { ("http", "ws", "tcp") };
    tracing::info!("gotalk on {ws}://{http_addr}/gotalk/ and {raw}://{tcp_addr}");
    // A server outlives whoever reads its stdout: a closed pipe must not stop it, so write
    // errors are ignored (`println!` would panic).
    let mut banner = String::new();
    if has_site {
        banner.push_str(&format!("gotalk demo:      {web}://{http_addr}/\n"));
    }
    banner.push_str(&format!(
        "gotalk websocket: {ws}://{http_addr}/gotalk/\n\
         gotalk tcp:       {raw}://{tcp_addr}\n\
         try: gotalk call {raw}://{tcp_addr} whoami\n"
    ));
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());

    gateway.run(http, http_listener, Some((tcp, tcp_listener)), shutdown_signal()).await?;
    // Drained: the other instances of a cluster forget this one now, not at its expiry.
    relay.leave_cluster().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_waits() {
        assert_eq!(parse_wait("0.5"), Ok((0.5, 0.5)));
        assert_eq!(parse_wait("0.5..5"), Ok((0.5, 5.0)));
        assert_eq!(parse_wait(" 1 .. 2 "), Ok((1.0, 2.0)));
        for bad in ["", "..", "1..", "..2", "x", "1..y"] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
        // Negative seconds parse, and are refused when the config is built.
        let args = LimitArgs {
            request_limit: None,
            stream_limit: None,
            max_payload: None,
            read_timeout: None,
            frame_timeout: None,
            heartbeat: None,
            retry_wait: Some((-1.0, 1.0)),
            liveness: None,
            probe_interval: None,
            probe_misses: None,
            memory_budget: None,
            connection_budget: None,
            request_timeout: None,
        };
        assert!(args.config().is_err());
    }

    #[test]
    fn a_liveness_preset_keeps_the_read_timeout_and_heartbeats_given() {
        let args = |liveness: &str, read_timeout: Option<f64>, heartbeat: Option<f64>| LimitArgs {
            request_limit: None,
            stream_limit: None,
            max_payload: None,
            read_timeout,
            frame_timeout: None,
            heartbeat,
            retry_wait: None,
            liveness: Some(parse_liveness(liveness).unwrap()),
            probe_interval: None,
            probe_misses: None,
            memory_budget: None,
            connection_budget: None,
            request_timeout: None,
        };
        let live = |args: LimitArgs| args.config().unwrap().liveness_config();
        // The preset named as the default is the default, read timeout (90 s) included.
        let default = Config::default().liveness_config();
        assert_eq!(default.peer_idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(live(args("gateway", None, None)), default);
        let libvirt = live(args("libvirt", Some(30.0), Some(0.0)));
        assert_eq!(libvirt.peer_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(libvirt.heartbeat_interval, None);
        assert_eq!(libvirt.interval, LivenessConfig::libvirt().interval);
        let off = live(args("off", Some(30.0), None));
        assert_eq!(
            off,
            LivenessConfig {
                peer_idle_timeout: Some(Duration::from_secs(30)),
                ..LivenessConfig::disabled()
            }
        );
    }

    /// `gotalk serve`'s relay flags alone.
    #[derive(clap::Parser, Debug)]
    struct RelayFlags {
        #[command(flatten)]
        relay: RelayArgs,
    }

    #[test]
    fn relay_flags_reach_the_relay() {
        use clap::Parser;
        let relay = |args: &[&str]| {
            let parsed = RelayFlags::try_parse_from(std::iter::once("serve").chain(args.to_vec()));
            format!("{:?}", parsed.unwrap().relay.relay().unwrap())
        };
        assert_eq!(relay(&[]), format!("{:?}", gotalk::relay::Relay::new()));
        let given = relay(&["--relay-in-flight-bytes=4096", "--relay-max-groups=7"]);
        let expected = gotalk::relay::Relay::new().max_in_flight_bytes(4096).max_groups(7);
        assert_eq!(given, format!("{expected:?}"));
        assert!(given.contains("max_in_flight_bytes: 4096") && given.contains("max_groups: 7"));
    }

    /// `gotalk serve`'s cluster flags alone.
    #[derive(clap::Parser, Debug)]
    struct Cluster {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn cluster(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        use clap::Parser;
        Cluster::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.cluster)
    }

    #[tokio::test]
    async fn cluster_flags_name_one_bus_and_a_safe_prefix() {
        let none = cluster(&[]).unwrap();
        assert_eq!(
            (&none.redis, &none.nats, none.cluster_prefix.as_str()),
            (&None, &None, "gotalk")
        );
        assert!(none.bus().await.unwrap().is_none(), "one process needs no bus");
        let both = cluster(&["--redis", "redis://127.0.0.1:1", "--nats", "nats://127.0.0.1:2"]);
        assert_eq!(both.unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
        // Port 1 refuses: the error names the flag whose bus could not be reached.
        for (flag, url) in [("--redis", "redis://127.0.0.1:1"), ("--nats", "nats://127.0.0.1:1")] {
            let e = cluster(&[flag, url]).unwrap().bus().await.err().expect("refused");
            assert!(format!("{e:#}").starts_with(flag), "{e:#}");
        }
        assert_eq!(cluster(&["--cluster-prefix", "app_2-x"]).unwrap().cluster_prefix, "app_2-x");
        for bad in ["a.b", "a:b", "a*", "", "{a}"] {
            assert!(cluster(&["--cluster-prefix", bad]).is_err(), "{bad:?}");
        }
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn cluster_tuning_flags_reach_the_settings() {
        use gotalk_cluster::ClusterSettings;
        let settings = |args: &[&str]| cluster(args).map(|c| c.settings());
        let defaults = settings(&[]).unwrap().unwrap();
        assert_eq!(defaults, ClusterSettings::default());
        let given = settings(&[
            "--cluster-prefix=chat",
            "--cluster-relay-timeout=2.5",
            "--cluster-call-timeout=0.1",
            "--cluster-connect-timeout=3",
            "--cluster-backoff-min=0.05",
            "--cluster-backoff-max=1",
            "--cluster-probe=0.5",
            "--cluster-probe-timeout=0.75",
            "--cluster-heartbeat=2",
            "--cluster-presence-expiry=6",
            "--cluster-history-timeout=0.5",
            "--cluster-group-linger=0",
            "--cluster-outbound-bytes=1024",
            "--cluster-max-pending=1",
            "--cluster-incoming-queue=7",
            "--cluster-subscribe-batch=50",
        ]);
        let ms = Duration::from_millis;
        let expected = ClusterSettings::default()
            .prefix("chat")
            .relay_timeout(ms(2500))
            .call_timeout(ms(100))
            .connect_timeout(ms(3000))
            .backoff(ms(50), ms(1000))
            .probe(ms(500), ms(750))
            .heartbeat(ms(2000))
            .presence_expiry(ms(6000))
            .history_timeout(ms(500))
            .group_linger(Duration::ZERO)
            .outbound_bytes(1024)
            .max_pending(1)
            .incoming_queue(7)
            .subscribe_batch(50);
        assert_eq!(given.unwrap().unwrap(), expected);
    }

    #[test]
    fn cluster_tuning_flags_refuse_values_that_cannot_work() {
        // Parse errors: zero or negative deadlines and periods, zero bounds, not numbers.
        for bad in [
            "--cluster-relay-timeout=0",
            "--cluster-heartbeat=-1",
            "--cluster-probe=nan",
            "--cluster-probe-timeout=inf",
            "--cluster-call-timeout=x",
            "--cluster-group-linger=-0.5",
            "--cluster-outbound-bytes=0",
            "--cluster-max-pending=0",
            "--cluster-incoming-queue=0",
            "--cluster-incoming-queue=-3",
            "--cluster-subscribe-batch=0",
        ] {
            let err = cluster(&[bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}: {err}");
        }
        // The smallest values that can work are taken.
        assert!(cluster(&["--cluster-relay-timeout=0.001", "--cluster-group-linger=0"]).is_ok());
        assert!(cluster(&["--cluster-max-pending=1", "--cluster-incoming-queue=1"]).is_ok());
        // A link's own bound needs its bus.
        for (flag, bus) in [("--redis-max-pending=8", "--redis"), ("--nats-queue=8", "--nats")] {
            let err = cluster(&[flag]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{flag}");
            assert!(cluster(&[flag, bus, "x://127.0.0.1:1"]).is_ok(), "{flag}");
        }
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn cluster_tuning_flags_that_contradict_each_other_are_refused() {
        let settings = |args: &[&str]| cluster(args).unwrap().settings().map(drop);
        // Expiry must outlast a heartbeat, the defaults of the other one included.
        assert!(settings(&["--cluster-heartbeat=5", "--cluster-presence-expiry=5.001"]).is_ok());
        let err = settings(&["--cluster-heartbeat=5", "--cluster-presence-expiry=5"]).unwrap_err();
        assert!(err.to_string().contains("--cluster-presence-expiry"), "{err}");
        assert!(settings(&["--cluster-presence-expiry=4"]).is_err(), "default heartbeat 5 s");
        assert!(settings(&["--cluster-heartbeat=15"]).is_err(), "default expiry 15 s");
        assert!(settings(&["--cluster-backoff-min=1", "--cluster-backoff-max=1"]).is_ok());
        let err = settings(&["--cluster-backoff-min=1.5", "--cluster-backoff-max=1"]).unwrap_err();
        assert!(err.to_string().contains("--cluster-backoff-max"), "{err}");
        assert!(settings(&["--cluster-backoff-min=6"]).is_err(), "default max 5 s");
    }

    #[test]
    fn ready_only_while_the_bus_is_up() {
        let mut bus = BusState::default();
        bus.up = true;
        assert_eq!(readiness(&bus), (StatusCode::OK, "ready"));
        bus.up = false;
        assert_eq!(readiness(&bus), (StatusCode::SERVICE_UNAVAILABLE, "degraded: bus down"));
        // One process's bus is up from the start.
        assert!(gotalk::relay::Relay::new().state().borrow().up);
    }

    #[test]
    fn parses_liveness_presets() {
        assert_eq!(parse_liveness("gateway"), Ok(LivenessConfig::gateway_default()));
        assert_eq!(parse_liveness("libvirt"), Ok(LivenessConfig::libvirt()));
        assert_eq!(parse_liveness("ouroboros"), Ok(LivenessConfig::ouroboros()));
        assert_eq!(parse_liveness("off"), Ok(LivenessConfig::disabled()));
        assert!(parse_liveness("Gateway").is_err());
    }
}
