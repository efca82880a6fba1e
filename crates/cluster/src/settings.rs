//! The cluster's settings: each has a default, and a setter that takes and returns the
//! settings by value.

use std::time::Duration;

/// How a [`ClusterBus`](crate::ClusterBus) uses its bus.
///
/// ```
/// use std::time::Duration;
/// use gotalk_cluster::ClusterSettings;
/// let settings = ClusterSettings::default().prefix("chat").relay_timeout(Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ClusterSettings {
    pub(crate) prefix: String,
    pub(crate) relay_timeout: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) probe_idle: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) presence_expiry: Duration,
    pub(crate) history_timeout: Duration,
    pub(crate) group_linger: Duration,
    pub(crate) outbound_bytes: usize,
    pub(crate) max_pending: usize,
    pub(crate) incoming_queue: usize,
    pub(crate) subscribe_batch: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            relay_timeout: Self::DEFAULT_RELAY_TIMEOUT,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            backoff_min: Self::DEFAULT_BACKOFF_MIN,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            probe_idle: Self::DEFAULT_PROBE_IDLE,
            probe_timeout: Self::DEFAULT_PROBE_TIMEOUT,
            heartbeat: Self::DEFAULT_HEARTBEAT,
            presence_expiry: Self::DEFAULT_PRESENCE_EXPIRY,
            history_timeout: Self::DEFAULT_HISTORY_TIMEOUT,
            group_linger: Self::DEFAULT_GROUP_LINGER,
            outbound_bytes: Self::DEFAULT_OUTBOUND_BYTES,
            max_pending: Self::DEFAULT_MAX_PENDING,
            incoming_queue: Self::DEFAULT_INCOMING_QUEUE,
            subscribe_batch: Self::DEFAULT_SUBSCRIBE_BATCH,
        }
    }
}

impl ClusterSettings {
    /// The default of [`prefix`](Self::prefix).
    pub const DEFAULT_PREFIX: &'static str = "gotalk";
    /// The default of [`relay_timeout`](Self::relay_timeout).
    pub const DEFAULT_RELAY_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default of [`call_timeout`](Self::call_timeout).
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(250);
    /// The default of [`connect_timeout`](Self::connect_timeout).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default lower bound of [`backoff`](Self::backoff).
    pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
    /// The default upper bound of [`backoff`](Self::backoff).
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
    /// The default idle time of [`probe`](Self::probe).
    pub const DEFAULT_PROBE_IDLE: Duration = Duration::from_secs(5);
    /// The default timeout of [`probe`](Self::probe).
    pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default of [`heartbeat`](Self::heartbeat).
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
    /// The default of [`presence_expiry`](Self::presence_expiry).
    pub const DEFAULT_PRESENCE_EXPIRY: Duration = Duration::from_secs(15);
    /// The default of [`history_timeout`](Self::history_timeout).
    pub const DEFAULT_HISTORY_TIMEOUT: Duration = Duration::from_millis(250);
    /// The default of [`group_linger`](Self::group_linger).
    pub const DEFAULT_GROUP_LINGER: Duration = Duration::from_secs(30);
    /// The default of [`outbound_bytes`](Self::outbound_bytes): 8 MiB.
    pub const DEFAULT_OUTBOUND_BYTES: usize = 8 * 1024 * 1024;
    /// The default of [`max_pending`](Self::max_pending).
    pub const DEFAULT_MAX_PENDING: usize = 16_384;
    /// The default of [`incoming_queue`](Self::incoming_queue).
    pub const DEFAULT_INCOMING_QUEUE: usize = 4096;
    /// The default of [`subscribe_batch`](Self::subscribe_batch).
    pub const DEFAULT_SUBSCRIBE_BATCH: usize = 1000;
}

impl ClusterSettings {
    /// The first part of every channel name. Default `gotalk`; instances of one cluster share
    /// it, and a bus user limited to it (Redis `&gotalk:*`, NATS `gotalk.>`) is all they need.
    /// Its characters must be safe in a channel name: letters, digits, `-` and `_`. The link's
    /// own channels (Redis reply channels, NATS inboxes) take it too.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a relay to another instance waits for that instance's answer before it ends
    /// as "relay timeout". Default 1 s.
    pub fn relay_timeout(mut self, timeout: Duration) -> Self {
        self.relay_timeout = timeout;
        self
    }

    /// The deadline of each publish and subscribe. Default 250 ms; a call past it counts as
    /// a failure of the bus.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How long connecting to the bus, and resubscribing a batch after connecting, may take.
    /// Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The reconnect delays: exponential from `min` to `max`, each drawn at random below its
    /// bound (full jitter), so instances do not come back all at once. Default 100 ms to 5 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// After `idle` with nothing received, the instance sends itself a probe through the bus;
    /// if it is not back within `timeout`, the connection is thrown away and another made.
    /// This finds a subscription the bus dropped without saying so. Default 5 s and 5 s.
    pub fn probe(mut self, idle: Duration, timeout: Duration) -> Self {
        self.probe_idle = idle;
        self.probe_timeout = timeout;
        self
    }

    /// How often the instance tells the others it is alive. Default 5 s.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long after its last heartbeat another instance's members are forgotten (while this
    /// instance's own bus is up). Default 15 s.
    pub fn presence_expiry(mut self, after: Duration) -> Self {
        self.presence_expiry = after;
        self
    }

    /// How long a first member's instance waits for another instance to send a group's kept
    /// messages. Default 250 ms. An instance that has just started has not heard yet who is
    /// where (the others answer its hello with their members): until this long after its
    /// hello, a fetch that knows of no instance with members of the group waits first to hear
    /// of one.
    pub fn history_timeout(mut self, timeout: Duration) -> Self {
        self.history_timeout = timeout;
        self
    }

    /// How long the instance stays subscribed to a group after its last local member left, so
    /// a member that leaves and comes back does not churn subscriptions. Default 30 s.
    pub fn group_linger(mut self, linger: Duration) -> Self {
        self.group_linger = linger;
        self
    }

    /// The bytes of messages handed to the bus and not done with: a publish until the bus
    /// took it, a relay until its answer came (each counts its bytes on the bus: a relay's
    /// payload plus 22). Default 8 MiB; past it, relays answer "relay unavailable" and
    /// publishes fail (counted as unpublished). One message always fits when nothing else is
    /// on its way.
    pub fn outbound_bytes(mut self, bytes: usize) -> Self {
        self.outbound_bytes = bytes;
        self
    }

    /// How many relays to other instances may wait for their answers at once. Default 16,384;
    /// past it, relays answer "relay unavailable".
    pub fn max_pending(mut self, count: usize) -> Self {
        self.max_pending = count;
        self
    }

    /// How many received messages may wait to be handled. Default 4096; past it, they are
    /// dropped and counted.
    pub fn incoming_queue(mut self, messages: usize) -> Self {
        self.incoming_queue = messages.max(1);
        self
    }

    /// How many channels one subscribe asks for when resubscribing after a reconnect.
    /// Default 1000.
    pub fn subscribe_batch(mut self, channels: usize) -> Self {
        self.subscribe_batch = channels.max(1);
        self
    }
}
