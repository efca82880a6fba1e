//! What the tests share: the fixture operations, and the servers built from them.
//!
//! - [`fixtures`]: the operations every test server offers, the integration tests' included.
//! - [`e2e`]: the server the browser tests and the process tests run (`gotalk-e2e`): the demo
//!   (chat, search, its page) and the fixtures, behind `gotalk serve`'s flags.
//! - [`conformance`]: the relay bus conformance suite, run against the one-process bus and
//!   each cluster bus by the test target `cluster`.
//! - [`cluster`]: a bus, `gotalk-e2e serve` instances on it and haproxy in front, as real
//!   processes (the `gotalk-cluster-fixture` binary drives one for the browser tests).
//! - [`servers`]: real `redis-server`, `nats-server` and `haproxy` processes on free ports, for
//!   the cluster tests.
//! - [`link_conformance`](mod@link_conformance): what every cluster link must do, as cases run against a real bus.
//!
//! The binaries `gotalk-e2e`, `gotalk-interop` (a server other implementations are tested
//! against) and `gotalk-cluster-fixture` are this package's; integration tests find them with `env!("CARGO_BIN_EXE_…")`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod conformance;
pub mod e2e;
pub mod fixtures;
pub mod go;
pub mod link_conformance;
pub mod servers;
