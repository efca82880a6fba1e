//! Prometheus metrics of a gateway: connections, requests, memory, the relay and its bus, in
//! the Prometheus text format, for an axum route any app mounts.
//!
//! Most figures already exist where they are kept (a [`Connections`] registry's counts and
//! liveness, a [`MemoryBudget`], a [`Relay`]'s bus): they are read when `/metrics` is scraped,
//! not counted a second time. Only requests are counted here, as the registry's
//! [`Extension`] hears of them, by the name the op is registered under: an op only a fallback
//! serves, or nobody, counts under `op="unknown"`, so a peer that makes up names cannot add
//! series.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::routing::MethodRouter;
use gotalk::relay::Relay;
use gotalk::{Connections, Extension, MemoryBudget, RequestDone, RequestOutcome, Sock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The label of requests for ops that are not registered by name.
pub const UNKNOWN_OP: &str = "unknown";

/// The upper bounds of the request duration histogram's buckets, in seconds: from 100 µs
/// (a request answered on a loopback connection) to 10 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The outcomes counted as errors, in the order of [`OpSeries::errors`].
const ERROR_KINDS: [RequestOutcome; 6] = [
    RequestOutcome::Error,
    RequestOutcome::Panicked,
    RequestOutcome::Retry,
    RequestOutcome::Refused,
    RequestOutcome::Unknown,
    RequestOutcome::Cancelled,
];

/// The bus figures ([`Relay::bus_figures`]) that only grow: exported as counters, the others
/// as gauges (a figure added later is a gauge until it is listed here).
const BUS_COUNTERS: [&str; 10] = [
    "reconnects",
    "recoveries",
    "dropped_malformed",
    "dropped_overflow",
    "dropped_unpublished",
    "relays_delivered",
    "relays_full",
    "relays_unknown",
    "relays_unavailable",
    "relays_timeout",
];

/// A gateway's metrics, rendered in the Prometheus text format.
///
/// Register it on the [`Handlers`](gotalk::Handlers) as an extension (it counts requests),
/// tell it where the figures it reads live, and mount [`handler`](Self::handler):
///
/// ```
/// use std::sync::Arc;
/// use gotalk_gateway::{Gateway, Metrics};
///
/// let metrics = Metrics::new();
/// let mut handlers = gotalk::Handlers::new();
/// handlers.handle("echo", |_sock, text: String| async move { Ok::<_, String>(text) });
/// handlers.extension(metrics.clone());
/// let config = gotalk::Config::default();
/// metrics.budget(config.budget().clone());
///
/// let gateway = Gateway::new(Arc::new(handlers), config);
/// metrics.connections("websocket", gateway.connections());
/// let app: axum::Router = axum::Router::new()
///     .nest_service("/gotalk", gateway.router())
///     .route("/metrics", metrics.handler());
/// assert!(metrics.render().contains("gotalk_connections_open{transport=\"websocket\"} 0"));
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    state: Arc<State>,
    registry: Arc<Registry>,
}

#[derive(Debug, Default)]
struct State {
    sources: RwLock<Sources>,
    /// One entry per op name, made on its first request; names are registered ones (and
    /// [`UNKNOWN_OP`]), so the table is as bounded as the registry.
    ops: RwLock<HashMap<Box<str>, Arc<OpSeries>>>,
}

/// Where the figures read at each scrape live.
#[derive(Debug, Default)]
struct Sources {
    connections: Vec<(&'static str, Connections)>,
    budget: Option<MemoryBudget>,
    relay: Option<Relay>,
}

/// The request series of one op.
#[derive(Debug)]
struct OpSeries {
    requests: Counter,
    errors: [Counter; ERROR_KINDS.len()],
    duration: Histogram,
}

impl Default for OpSeries {
    fn default() -> Self {
        OpSeries {
            requests: Counter::default(),
            errors: Default::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics with no figures to read yet: only requests, once registered as an extension.
    pub fn new() -> Self {
        let state = Arc::new(State::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(state.clone())));
        Metrics { state, registry: Arc::new(registry) }
    }

    /// Exports the open connections of `connections` (and how many it ever held, the bytes
    /// in their send queues, and what liveness saw on them) under `transport="…"`. A
    /// listener and a gateway each have one registry: `tcp` and `websocket`, say.
    pub fn connections(&self, transport: &'static str, connections: Connections) -> &Self {
        write(&self.state.sources).connections.push((transport, connections));
        self
    }

    /// Exports the use of the process's memory budget: capacity, bytes used, and the peak.
    pub fn budget(&self, budget: MemoryBudget) -> &Self {
        write(&self.state.sources).budget = Some(budget);
        self
    }

    /// Exports the relay's local peers and its bus's figures (none for one process; a
    /// cluster's reconnects, relay outcomes, drops and latency).
    pub fn relay(&self, relay: Relay) -> &Self {
        write(&self.state.sources).relay = Some(relay);
        self
    }

    /// Every series, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and the collector's only errors are the writer's.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// A GET route that answers with [`render`](Self::render), for `Router::route`.
    pub fn handler<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let metrics = self.clone();
        axum::routing::get(move || {
            let text = metrics.render();
            async move {
                let content_type = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
                ([(::http::header::CONTENT_TYPE, content_type)], text)
            }
        })
    }

    /// Runs `f` on the series of `op`, made on first use; after that, under a read lock.
    fn with_op(&self, op: &str, f: impl FnOnce(&OpSeries)) {
        if let Some(series) = read(&self.state.ops).get(op) {
            return f(series);
        }
        let series = write(&self.state.ops).entry(op.into()).or_default().clone();
        f(&series)
    }
}

impl Extension for Metrics {
    fn request_done(&self, _sock: &Sock, done: &RequestDone<'_>) {
        self.with_op(done.op.unwrap_or(UNKNOWN_OP), |series| {
            series.requests.inc();
            series.duration.observe(done.elapsed.as_secs_f64());
            if let Some(kind) = ERROR_KINDS.iter().position(|kind| *kind == done.outcome) {
                series.errors[kind].inc();
            }
        });
    }
}

/// The collector that writes every series at a scrape.
#[derive(Debug)]
struct Scrape(Arc<State>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sources = read(&self.0.sources);
        connections(&mut encoder, &sources.connections)?;
        if let Some(budget) = &sources.budget {
            let figures = [
                ("capacity", "The memory budget's size.", budget.capacity()),
                ("used", "Bytes held on peers' behalf now.", budget.used()),
                ("peak", "The most bytes held at once so far.", budget.peak()),
            ];
            for (name, help, value) in figures {
                let name = format!("gotalk_memory_budget_{name}_bytes");
                gauge(&mut encoder, &name, help, value)?;
            }
        }
        if let Some(relay) = &sources.relay {
            gauge(
                &mut encoder,
                "gotalk_relay_peers",
                "Peers with a relay id here.",
                relay.peers(),
            )?;
            for (figure, value) in relay.bus_figures() {
                let help = format!("The cluster bus's {figure:?} figure.");
                if BUS_COUNTERS.contains(&figure) {
                    let name = format!("gotalk_bus_{figure}");
                    let metric =
                        encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
                    ConstCounter::new(value).encode(metric)?;
                } else {
                    gauge(&mut encoder, &format!("gotalk_bus_{figure}"), &help, value)?;
                }
            }
        }
        drop(sources);
        requests(&mut encoder, &read(&self.0.ops))
    }
}

/// The figures of each connection registry, one series per transport.
fn connections(
    encoder: &mut DescriptorEncoder<'_>,
    registries: &[(&'static str, Connections)],
) -> Result<(), std::fmt::Error> {
    let family = |encoder: &mut DescriptorEncoder<'_>,
                  name: &str,
                  help: &str,
                  kind: MetricType,
                  value: &dyn Fn(&Connections) -> u64|
     -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
        for (transport, registry) in registries {
            let labels = [("transport", *transport)];
            let series = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value(registry)).encode(series)?,
                _ => ConstGauge::new(value(registry)).encode(series)?,
            }
        }
        Ok(())
    };
    family(encoder, "gotalk_connections_open", "Connections open now.", MetricType::Gauge, &|c| {
        c.len() as u64
    })?;
    family(
        encoder,
        "gotalk_connections_opened",
        "Connections opened since the start.",
        MetricType::Counter,
        &|c| c.opened(),
    )?;
    family(
        encoder,
        "gotalk_send_queue_bytes",
        "Bytes waiting in the send queues of the open connections.",
        MetricType::Gauge,
        &|c| c.queued_bytes() as u64,
    )?;
    let liveness = registries.iter().map(|(t, c)| (*t, c.liveness())).collect::<Vec<_>>();
    let mut metric = encoder.encode_descriptor(
        "gotalk_liveness_events",
        "What dead-peer detection saw: probes sent, answered (acked, or acked_unverified by a \
         peer without $ping), suppressed by other traffic; peers declared dead, peers done.",
        None,
        MetricType::Counter,
    )?;
    for (transport, counts) in &liveness {
        let events = [
            ("probe_sent", counts.probes_sent),
            ("acked", counts.acked),
            ("acked_unverified", counts.acked_unverified),
            ("suppressed", counts.suppressed),
            ("dead", counts.dead),
            ("done", counts.done),
        ];
        for (event, value) in events {
            let labels = [("transport", *transport), ("event", event)];
            let series = metric.encode_family(&labels)?;
            ConstCounter::new(value).encode(series)?;
        }
    }
    let mut metric = encoder.encode_descriptor(
        "gotalk_liveness_rtt_mean_seconds",
        "The mean round trip of the answered liveness probes.",
        None,
        MetricType::Gauge,
    )?;
    for (transport, counts) in &liveness {
        let labels = [("transport", *transport)];
        let series = metric.encode_family(&labels)?;
        ConstGauge::new(counts.mean_rtt_ms / 1000.0).encode(series)?;
    }
    Ok(())
}

/// The request series of every op seen so far.
fn requests(
    encoder: &mut DescriptorEncoder<'_>,
    ops: &HashMap<Box<str>, Arc<OpSeries>>,
) -> Result<(), std::fmt::Error> {
    let mut ops: Vec<(&str, &OpSeries)> = ops.iter().map(|(op, s)| (&**op, &**s)).collect();
    ops.sort_unstable_by_key(|(op, _)| *op);
    let mut metric = encoder.encode_descriptor(
        "gotalk_requests",
        "Requests from peers that are done, by op.",
        None,
        MetricType::Counter,
    )?;
    for (op, series) in &ops {
        series.requests.encode(metric.encode_family(&[("op", *op)])?)?;
    }
    let mut metric = encoder.encode_descriptor(
        "gotalk_request_errors",
        "Requests not answered with a result, by op and kind: error (the handler's), \
         panicked, retry (a RetryResult), refused (a limit), unknown (no handler), cancelled \
         (the connection closed first).",
        None,
        MetricType::Counter,
    )?;
    for (op, series) in &ops {
        for (kind, counter) in ERROR_KINDS.iter().zip(&series.errors) {
            let labels = [("op", *op), ("kind", kind.as_str())];
            counter.encode(metric.encode_family(&labels)?)?;
        }
    }
    let mut metric = encoder.encode_descriptor(
        "gotalk_request_duration_seconds",
        "From a request's arrival until its answer was ready, by op.",
        None,
        MetricType::Histogram,
    )?;
    for (op, series) in &ops {
        series.duration.encode(metric.encode_family(&[("op", *op)])?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    let metric: MetricEncoder<'_> =
        encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// The metrics' tables hold counters only, which a panic cannot leave half-changed: a
/// poisoned lock is used as is.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
