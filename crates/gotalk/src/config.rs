//! Per-connection settings: limits, timeouts and heartbeats.
//!
//! One [`Config`] is shared by every connection a listener accepts (and by client sockets).
//! Each limit has a default chosen to be safe on the open internet, a setter named after it,
//! and a documented effect on the peer when it is reached.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gotalk_protocol::liveness::{InvalidLiveness, LivenessConfig};
use gotalk_protocol::{DEFAULT_MAX_PAYLOAD, MAX_NAME_LEN};

use crate::memory::MemoryBudget;

/// A function that reports this process's load for outgoing heartbeats (0 idle, 0xffff dying).
pub(crate) type LoadFn = Arc<dyn Fn() -> u16 + Send + Sync>;

/// Settings for one connection. Cheap to clone; setters take and return it by value (see
/// `docs/builders.md`).
///
/// ```
/// use std::time::Duration;
/// use gotalk::{Config, LivenessConfig};
///
/// let config = Config::default()
///     .request_limit(64)
///     .read_timeout(Some(Duration::from_secs(30)))
///     .liveness(LivenessConfig::libvirt())?;
/// // The read timeout's own setter wins over the preset, whichever came first.
/// assert_eq!(config.liveness_config().peer_idle_timeout, Some(Duration::from_secs(30)));
/// # Ok::<(), gotalk::protocol::liveness::InvalidLiveness>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct Config {
    pub(crate) max_payload: u32,
    pub(crate) max_name_len: usize,
    pub(crate) request_limit: u32,
    pub(crate) stream_limit: u32,
    pub(crate) retry_wait_min: Duration,
    pub(crate) retry_wait_max: Duration,
    pub(crate) max_retries: u32,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) frame_timeout: Option<Duration>,
    pub(crate) write_timeout: Duration,
    pub(crate) send_queue_bytes: usize,
    pub(crate) notification_queue_bytes: usize,
    pub(crate) stream_buffer_bytes: usize,
    /// The one owner of the liveness settings: probes, the read timeout
    /// (`peer_idle_timeout`), the handshake timeout and heartbeats.
    pub(crate) liveness: LivenessConfig,
    /// Which liveness settings were given their own setter, so a later preset leaves them be.
    pinned: Pinned,
    /// When set, reports the load in heartbeats instead of `liveness.heartbeat_load`.
    pub(crate) heartbeat_load: Option<LoadFn>,
    pub(crate) peer_understands_retry: bool,
    pub(crate) held_requests: usize,
    pub(crate) memory_budget: MemoryBudget,
    pub(crate) connection_budget: Option<usize>,
    /// False on connections a server accepted: they say the hello only in reply to the
    /// peer's, so that another implementation's client never gets one.
    pub(crate) hello_first: bool,
}

/// The liveness settings that have a setter of their own on [`Config`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pinned {
    read_timeout: bool,
    handshake_timeout: bool,
    heartbeat_interval: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_name_len: MAX_NAME_LEN,
            request_limit: 128,
            stream_limit: 32,
            retry_wait_min: Duration::from_millis(500),
            retry_wait_max: Duration::from_millis(5000),
            max_retries: 5,
            request_timeout: None,
            frame_timeout: Some(Duration::from_secs(300)),
            write_timeout: Duration::from_secs(30),
            send_queue_bytes: 4 << 20,
            notification_queue_bytes: 1 << 20,
            stream_buffer_bytes: 16 << 20,
            liveness: LivenessConfig::gateway_default(),
            pinned: Pinned::default(),
            heartbeat_load: None,
            peer_understands_retry: true,
            held_requests: 256,
            memory_budget: MemoryBudget::default(),
            connection_budget: None,
            hello_first: true,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_payload", &self.max_payload)
            .field("max_name_len", &self.max_name_len)
            .field("request_limit", &self.request_limit)
            .field("stream_limit", &self.stream_limit)
            .field("retry_wait_min", &self.retry_wait_min)
            .field("retry_wait_max", &self.retry_wait_max)
            .field("max_retries", &self.max_retries)
            .field("request_timeout", &self.request_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("send_queue_bytes", &self.send_queue_bytes)
            .field("notification_queue_bytes", &self.notification_queue_bytes)
            .field("stream_buffer_bytes", &self.stream_buffer_bytes)
            .field("liveness", &self.liveness)
            .field("heartbeat_load", &self.heartbeat_load.is_some())
            .field("peer_understands_retry", &self.peer_understands_retry)
            .field("held_requests", &self.held_requests)
            .field("memory_budget", &self.memory_budget)
            .field("connection_budget", &self.connection_budget_bytes())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The largest payload accepted from the peer, and sent to it. Default 16 MiB.
    ///
    /// A peer that declares a larger payload gets ProtocolError 2 and is disconnected, before
    /// anything is allocated for the payload. A local send of a larger payload fails with
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge); a handler's larger result
    /// is answered with an ErrorResult instead, and error text is cut to fit.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The longest operation or notification name accepted from the peer. Default and ceiling
    /// 4095 bytes, the most the wire can carry. A longer name gets ProtocolError 2.
    pub fn max_name_len(mut self, bytes: usize) -> Self {
        self.max_name_len = bytes.min(MAX_NAME_LEN);
        self
    }

    /// How many of the peer's requests (single and streaming together) are handled at once.
    /// Default 128. Past it, the peer gets a RetryResult with a random wait (see
    /// [`retry_wait`](Self::retry_wait)) and the text `request rate limit`.
    pub fn request_limit(mut self, n: u32) -> Self {
        self.request_limit = n;
        self
    }

    /// How many of the peer's streaming requests are handled at once; counts towards
    /// [`request_limit`](Self::request_limit) too. Default 32. Past it, the peer gets a
    /// RetryResult `stream rate limit`; 0 turns streams off, and every stream request gets the
    /// ErrorResult `stream requests are disabled` (a retry could never succeed).
    pub fn stream_limit(mut self, n: u32) -> Self {
        self.stream_limit = n;
        self
    }

    /// The range `[min, max)` a RetryResult's wait is drawn from when a limit is reached.
    /// Default 500 ms to 5 s, as the Go package. Equal values send exactly that wait; `max`
    /// below `min` is taken as `min`.
    pub fn retry_wait(mut self, min: Duration, max: Duration) -> Self {
        self.retry_wait_min = min;
        self.retry_wait_max = max.max(min);
        self
    }

    /// How many times a request answered with a RetryResult is sent again, each after the
    /// wait the peer asked for. Default 5; 0 reports the first RetryResult as
    /// [`Error::Retry`](crate::Error::Retry).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// How long this side's single requests ([`Sock::request`](crate::Sock::request) and
    /// [`Sock::buffer_request`](crate::Sock::buffer_request), retries included) wait for their
    /// result. Default `None`: no deadline. Past it the call fails with
    /// [`Error::Timeout`](crate::Error::Timeout), its entry is freed, and a result that comes
    /// later is dropped and counted in [`Sock::late_results`](crate::Sock::late_results).
    /// [`Sock::with_timeout`](crate::Sock::with_timeout) overrides it for one call, and is
    /// the only way to put a deadline on a streaming request: a stream (a sources
    /// subscription, say) may rightly last as long as its connection.
    ///
    /// No deadline by default, as in Go and gotalk.js: a peer that dies or goes silent is
    /// found by the liveness checks (within 45 s by default), which fail every call in flight,
    /// so only a live peer's slow handler can hold a call, and how long that may take is the
    /// application's to say. The timeout is local: the peer is not told, and its handler runs
    /// on until it answers or the connection closes.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long the connection may go without a single byte from the peer. Default 90 s,
    /// comfortably above the 20 s heartbeats real peers send, and above the one-minute timer
    /// throttling browsers apply to background tabs. When it expires the peer gets
    /// ProtocolError 3 and the connection closes. `None` turns it off.
    ///
    /// Over WebSocket the transport delivers whole messages, so the clock restarts only when
    /// a message is complete: one message must arrive within the timeout, however slowly its
    /// bytes trickle in. Keep it above the time the largest payload takes on the slowest link
    /// you serve. Pongs do not restart it (they prove the peer alive to the liveness probes
    /// only): a peer may send them between the fragments of a message it trickles, and an
    /// idle peer sends heartbeats anyway.
    ///
    /// This is the liveness settings' `peer_idle_timeout` (see [`liveness`](Self::liveness)),
    /// and wins over it in either order.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.liveness.peer_idle_timeout = timeout;
        self.pinned.read_timeout = true;
        self
    }

    /// How long one message may take to arrive, from its first byte to its last. Default
    /// 5 minutes; then the peer gets ProtocolError 3 and the connection closes. `None` turns
    /// it off.
    ///
    /// The [read timeout](Self::read_timeout) counts from the last byte, so without this a
    /// peer that trickles a message (one byte a minute, say) would hold its connection and
    /// the partial message, with the read buffer reserved for the rest of it, for as long as
    /// it liked. An idle peer holds no partial message, so this never closes a healthy idle
    /// connection. The default lets a payload at the default 16 MiB limit arrive at 450
    /// kbit/s (a 3G uplink, with room to spare); over a slower link, or with a larger
    /// [`max_payload`](Self::max_payload), raise it; with small payloads, lower it.
    ///
    /// Over WebSocket it counts from the first whole WebSocket message that starts a gotalk
    /// message (the transport delivers whole messages); a WebSocket message still on its way
    /// is bounded by the read timeout, which only whole messages restart.
    pub fn frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// How long the peer has to send its protocol version after the connection opens.
    /// Default 10 s; then the connection closes with ProtocolError 3. It also bounds a TLS
    /// handshake and the gateway's `on_connect` hook.
    ///
    /// This is the liveness settings' `handshake_timeout` (see [`liveness`](Self::liveness)),
    /// and wins over it in either order.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.liveness.handshake_timeout = timeout;
        self.pinned.handshake_timeout = true;
        self
    }

    /// How long one write may stall because the peer does not read. Default 30 s; then the
    /// connection closes.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How many bytes of outgoing messages may wait to be written. Default 4 MiB. When full,
    /// senders (handlers, requests, the read loop's replies) wait: a peer that does not read
    /// its results stops being read from. One message larger than this still goes out alone.
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes.max(1);
        self
    }

    /// How many bytes of received notifications may wait for their handlers. Default 1 MiB.
    /// Notifications from one peer are handled in order, off the read loop; only when this
    /// fills does the read loop wait, which pushes back on the peer through the transport.
    pub fn notification_queue_bytes(mut self, bytes: usize) -> Self {
        self.notification_queue_bytes = bytes.max(1);
        self
    }

    /// How many bytes of one stream's parts may wait for their reader, in either direction.
    /// Default 16 MiB. Past it the stream is abandoned: an incoming stream request is answered
    /// with an ErrorResult, an outgoing one fails with
    /// [`Error::StreamOverflow`](crate::Error::StreamOverflow). A part larger than this is
    /// still accepted into an empty buffer.
    pub fn stream_buffer_bytes(mut self, bytes: usize) -> Self {
        self.stream_buffer_bytes = bytes.max(1);
        self
    }

    /// How often a heartbeat is sent. Default 20 s, as Go and gotalk.js, which keeps a Go peer
    /// with its default 30 s read timeout connected while idle. `None` (or zero) sends none.
    ///
    /// This is the liveness settings' `heartbeat_interval` (see [`liveness`](Self::liveness)),
    /// and wins over it in either order.
    pub fn heartbeat_interval(mut self, interval: Option<Duration>) -> Self {
        self.liveness.heartbeat_interval = interval.filter(|d| !d.is_zero());
        self.pinned.heartbeat_interval = true;
        self
    }

    /// Where the load in outgoing heartbeats comes from, asked at each heartbeat. Default:
    /// the liveness settings' fixed `heartbeat_load` (0); this function, once set, takes its
    /// place whatever [`liveness`](Self::liveness) is given, before or after.
    pub fn heartbeat_load(mut self, load: impl Fn() -> u16 + Send + Sync + 'static) -> Self {
        self.heartbeat_load = Some(Arc::new(load));
        self
    }

    /// Whether this side sends the hello that tells a server of ours it understands the
    /// reserved messages (on by default, for clients). Servers turn it off: they answer the
    /// peer's hello instead.
    pub fn hello_first(mut self, yes: bool) -> Self {
        self.hello_first = yes;
        self
    }

    /// Whether the peer can take a RetryResult. Default true, as for Go peers. The original
    /// gotalk.js cannot, so the WebSocket gateway sets this per connection. Requests from a
    /// peer that cannot are held (see [`held_requests`](Self::held_requests)) instead.
    pub fn peer_understands_retry(mut self, yes: bool) -> Self {
        self.peer_understands_retry = yes;
        self
    }

    /// Dead-peer detection, all at once: probes (`interval`, `max_unacked`,
    /// `response_timeout`, `activity_suppresses_probes`), the read timeout
    /// (`peer_idle_timeout`), the handshake timeout, heartbeats and their fixed load. Default
    /// [`LivenessConfig::gateway_default`]: a probe after 15 s of silence, two unanswered
    /// allowed, so a dead peer is found within 45 s of its last byte; the 90 s read timeout,
    /// the 10 s handshake timeout and heartbeats every 20 s, as documented on their setters.
    ///
    /// This config owns one set of liveness settings. A preset replaces all of them except
    /// those given their own setter on this config ([`read_timeout`](Self::read_timeout),
    /// [`handshake_timeout`](Self::handshake_timeout),
    /// [`heartbeat_interval`](Self::heartbeat_interval)): those keep their value whether
    /// they were set before or after, so the order of calls never matters.
    ///
    /// Probes go out as WebSocket Pings carrying a cookie, which browsers and WebSocket
    /// libraries answer themselves, or as the reserved request `$ping` over other transports,
    /// which our peers answer automatically. A peer not known to understand it (see
    /// [`Sock::peer_understands_reserved`](crate::Sock::peer_understands_reserved)) is not
    /// probed over those: its own traffic and heartbeats must arrive within the bound. A dead
    /// peer is sent ProtocolError 3, the connection closes with
    /// [`CloseReason::PeerDead`](crate::CloseReason::PeerDead), and its pending requests
    /// fail with that reason.
    ///
    /// # Errors
    /// The contradiction [`LivenessConfig::validate`] found in `liveness`.
    pub fn liveness(mut self, liveness: LivenessConfig) -> Result<Self, InvalidLiveness> {
        liveness.validate()?;
        let own = std::mem::replace(&mut self.liveness, liveness);
        if self.pinned.read_timeout {
            self.liveness.peer_idle_timeout = own.peer_idle_timeout;
        }
        if self.pinned.handshake_timeout {
            self.liveness.handshake_timeout = own.handshake_timeout;
        }
        if self.pinned.heartbeat_interval {
            self.liveness.heartbeat_interval = own.heartbeat_interval;
        }
        Ok(self)
    }

    /// The load to report in a heartbeat now: the function's, or else the fixed one.
    pub(crate) fn heartbeat_load_now(&self) -> u16 {
        self.heartbeat_load.as_ref().map_or(self.liveness.heartbeat_load, |load| load())
    }

    /// The liveness settings in effect. Its `heartbeat_load` is the fixed one; a
    /// [`heartbeat_load`](Self::heartbeat_load) function, if set, reports instead.
    pub fn liveness_config(&self) -> LivenessConfig {
        self.liveness
    }

    /// For a peer that cannot take a RetryResult: how many requests past the limits are held,
    /// in order, until a slot frees. Default 256. The read loop keeps reading meanwhile, so
    /// results the handlers wait for still arrive. Past this bound the peer gets an
    /// ErrorResult `request rate limit`, never a silent drop.
    pub fn held_requests(mut self, n: usize) -> Self {
        self.held_requests = n;
        self
    }

    /// The budget shared by every connection of the process: the bytes all of them may hold
    /// on their peers' behalf at once, in sum (see [`MemoryBudget`](crate::MemoryBudget) for what is charged).
    /// Default [`MemoryBudget::process`]: a quarter of the machine's memory, at most 512 MiB.
    /// When it is spent, reads wait, new requests get a RetryResult and listeners refuse new
    /// connections; give every config of a process the same one.
    pub fn memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = budget;
        self
    }

    /// The bytes one connection may hold on its peer's behalf at once: declared payloads
    /// being received, requests queued, held or running until their answer is written, stream
    /// parts in both directions, results being collected, queued notifications, decoded JSON
    /// parameters. Default 4 times [`max_payload`](Self::max_payload) (64 MiB), and at least
    /// 1 MiB. When it is
    /// spent, the connection stops being read from until its next message fits, and a
    /// request that does not fit is answered with a RetryResult `memory budget` (an
    /// ErrorResult for peers that cannot take one). A connection that holds nothing can
    /// always take one message up to the payload limit.
    pub fn connection_budget(mut self, bytes: usize) -> Self {
        self.connection_budget = Some(bytes.max(1));
        self
    }

    /// The connection budget in effect (see [`connection_budget`](Self::connection_budget)).
    pub fn connection_budget_bytes(&self) -> usize {
        self.connection_budget.unwrap_or((4 * self.max_payload as usize).max(1 << 20))
    }

    /// The process budget connections with this config draw on.
    pub fn budget(&self) -> &MemoryBudget {
        &self.memory_budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_default_liveness_is_the_default_config_s() {
        let default = Config::default().liveness_config();
        assert_eq!(default, LivenessConfig::default());
        assert_eq!(default.peer_idle_timeout, Some(s(90)));
        let config = Config::default().liveness(LivenessConfig::gateway_default()).unwrap();
        assert_eq!(config.liveness_config(), default);
    }

    /// Every order of the same setter calls gives the same settings: a setting's own setter
    /// wins over a preset, before or after it.
    #[test]
    fn liveness_settings_do_not_depend_on_the_order_of_calls() {
        type Step = fn(Config) -> Config;
        let steps: [Step; 5] = [
            |c| c.read_timeout(Some(s(30))),
            |c| c.handshake_timeout(s(4)),
            |c| c.heartbeat_interval(None),
            |c| {
                c.liveness(LivenessConfig { heartbeat_load: 3, ..LivenessConfig::libvirt() })
                    .unwrap()
            },
            |c| c.heartbeat_load(|| 7),
        ];
        let expected = LivenessConfig {
            peer_idle_timeout: Some(s(30)),
            handshake_timeout: s(4),
            heartbeat_interval: None,
            heartbeat_load: 3,
            ..LivenessConfig::libvirt()
        };
        let mut order: Vec<usize> = (0..steps.len()).collect();
        for_each_permutation(&mut order, 0, &mut |order| {
            let config = order.iter().fold(Config::default(), |c, &i| steps[i](c));
            assert_eq!(config.liveness_config(), expected, "order {order:?}");
            assert_eq!(config.heartbeat_load_now(), 7, "order {order:?}");
        });
    }

    #[test]
    fn a_preset_is_checked_alone_and_refused_whole() {
        let bad = LivenessConfig { interval: None, ..LivenessConfig::gateway_default() };
        let refused = Config::default().read_timeout(Some(s(30))).liveness(bad);
        assert_eq!(refused.err(), Some(InvalidLiveness::ProbesWithoutInterval));
        // A read timeout under the probe interval is the config's own business, not a
        // contradiction in the preset.
        let config = Config::default().read_timeout(Some(s(1))).liveness(LivenessConfig::libvirt());
        assert_eq!(config.unwrap().liveness_config().peer_idle_timeout, Some(s(1)));
    }

    fn for_each_permutation(items: &mut [usize], k: usize, f: &mut impl FnMut(&[usize])) {
        if k == items.len() {
            return f(items);
        }
        for i in k..items.len() {
            items.swap(k, i);
            for_each_permutation(items, k + 1, f);
            items.swap(k, i);
        }
    }
}
