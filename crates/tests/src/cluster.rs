//! A cluster of real processes: a bus (`redis-server` or `nats-server`), N `gotalk-e2e serve`
//! instances connected to it, and `haproxy` in front of them, each on free ports of 127.0.0.1.
//! The `gotalk-cluster-fixture` binary drives one from the browser tests; the process tests
//! (`tests/cluster_processes.rs`) use these pieces directly.
//!
//! Each instance can be killed (SIGKILL), started again on the same ports, paused (SIGSTOP)
//! and resumed; the bus can be killed and restarted on the same port. Dropping a guard kills
//! its process.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::servers::{Backend, Haproxy, Nats, Redis};

/// How long an instance may take to print its addresses.
pub const START_WITHIN: Duration = Duration::from_secs(15);

/// The health check haproxy runs when the instances answer it: ready only while the bus is up.
pub const READY_PATH: &str = "/readyz";

/// Which bus the instances share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// `redis-server`, given to each instance as `--redis URL`.
    Redis,
    /// `nats-server`, given to each instance as `--nats URL`.
    Nats,
}

impl std::str::FromStr for BusKind {
    type Err = String;

    fn from_str(text: &str) -> Result<BusKind, String> {
        match text {
            "redis" => Ok(BusKind::Redis),
            "nats" => Ok(BusKind::Nats),
            other => Err(format!("unknown bus {other:?}: redis or nats")),
        }
    }
}

/// A running bus server.
pub enum Bus {
    /// A `redis-server`.
    Redis(Redis),
    /// A `nats-server`.
    Nats(Nats),
}

impl Bus {
    /// Starts a bus of `kind` on a free port and waits until it answers.
    pub async fn start(kind: BusKind) -> Bus {
        match kind {
            BusKind::Redis => Bus::Redis(Redis::start().await),
            BusKind::Nats => Bus::Nats(Nats::start().await),
        }
    }

    /// Which bus it is.
    pub fn kind(&self) -> BusKind {
        match self {
            Bus::Redis(_) => BusKind::Redis,
            Bus::Nats(_) => BusKind::Nats,
        }
    }

    /// The URL instances connect to; the same across restarts.
    pub fn url(&self) -> String {
        match self {
            Bus::Redis(r) => r.url(),
            Bus::Nats(n) => n.url(),
        }
    }

    /// The serve flag that gives an instance this bus: `--redis` or `--nats`.
    pub fn flag(&self) -> &'static str {
        match self {
            Bus::Redis(_) => "--redis",
            Bus::Nats(_) => "--nats",
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        match self {
            Bus::Redis(r) => r.pid(),
            Bus::Nats(n) => n.pid(),
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        match self {
            Bus::Redis(r) => r.kill(),
            Bus::Nats(n) => n.kill(),
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        match self {
            Bus::Redis(r) => r.restart().await,
            Bus::Nats(n) => n.restart().await,
        }
    }

    /// SIGSTOP.
    pub fn pause(&self) {
        match self {
            Bus::Redis(r) => r.pause(),
            Bus::Nats(n) => n.pause(),
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        match self {
            Bus::Redis(r) => r.resume(),
            Bus::Nats(n) => n.resume(),
        }
    }
}

/// One `gotalk-e2e serve` process. Its first start takes ports the system picks; later
/// starts reuse them, so clients and haproxy find it where it was.
pub struct Instance {
    binary: PathBuf,
    args: Vec<String>,
    http_port: u16,
    tcp_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// Starts `binary serve` with `args` (besides `--http` and `--tcp`), its output appended
    /// to `log`, and waits for its addresses.
    pub async fn start(binary: &Path, args: Vec<String>, log: PathBuf) -> Instance {
        let mut instance = Instance {
            binary: binary.to_owned(),
            args,
            http_port: 0,
            tcp_port: 0,
            log,
            child: None,
        };
        instance.run().await;
        instance
    }

    /// Starts it again on the same ports (killing it first if it runs).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }

    async fn run(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).expect("open log");
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .args(["--http", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--tcp", &format!("127.0.0.1:{}", self.tcp_port)])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("clone log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let banner = async {
            let (mut http, mut tcp) = (None, None);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln_to(&log, &line);
                if let Some(url) = line.strip_prefix("gotalk demo:") {
                    http = Some(port_of(url));
                }
                if let Some(url) = line.strip_prefix("gotalk tcp:") {
                    tcp = Some(port_of(url));
                }
                if let (Some(http), Some(tcp)) = (http, tcp) {
                    return Some((http, tcp));
                }
            }
            None
        };
        let ports = tokio::time::timeout(START_WITHIN, banner).await.ok().flatten();
        let Some((http, tcp)) = ports else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let output = fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "{} serve {:?} printed no addresses within {START_WITHIN:?}\n--- {} ---\n{output}",
                self.binary.display(),
                self.args,
                self.log.display()
            );
        };
        (self.http_port, self.tcp_port) = (http, tcp);
        // Keep reading, so the server's later output has somewhere to go.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln_to(&log, &line);
            }
        });
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether it runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: its sockets stay open but it reads and writes nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the instance is not running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid}: {status}");
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `http://127.0.0.1:N/`: the demo page, `/gotalk/` for WebSockets.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.http_port)
    }

    /// `127.0.0.1:N`, as haproxy is given it.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:N`, gotalk over TCP.
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tcp_port)
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

fn writeln_to(mut file: &File, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(file, "{line}")
}

fn port_of(url: &str) -> u16 {
    let url = url.trim().trim_end_matches('/');
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{url:?}"))
}

/// What a cluster is made of.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `gotalk-e2e` binary.
    pub binary: PathBuf,
    /// The bus, or none: separate processes that share nothing, for checking the harness
    /// itself before the cluster mode exists. Never a cluster.
    pub bus: Option<BusKind>,
    /// How many instances.
    pub instances: usize,
    /// More `serve` flags for every instance.
    pub serve_args: Vec<String>,
}

/// A bus, instances on it, and haproxy in front, killed (in reverse) when dropped.
pub struct Cluster {
    /// The load balancer.
    pub haproxy: Haproxy,
    /// The instances, in haproxy's order.
    pub instances: Vec<Instance>,
    /// The bus, if any.
    pub bus: Option<Bus>,
    /// The path haproxy checks.
    pub health_path: String,
    dir: PathBuf,
}

impl Cluster {
    /// Starts the bus, the instances, and haproxy; returns once haproxy sees every instance up.
    pub async fn start(options: Options) -> Cluster {
        assert!(options.instances > 0, "a cluster needs an instance");
        let dir = std::env::temp_dir().join(format!(
            "gotalk-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let bus = match options.bus {
            Some(kind) => Some(Bus::start(kind).await),
            None => None,
        };
        let mut args = Vec::new();
        if let Some(bus) = &bus {
            args.extend([bus.flag().to_owned(), bus.url()]);
        }
        args.extend(options.serve_args.iter().cloned());
        let mut instances = Vec::new();
        for i in 0..options.instances {
            let log = dir.join(format!("instance-{i}.log"));
            instances.push(Instance::start(&options.binary, args.clone(), log).await);
        }
        let health_path = health_path(&instances[0]).await;
        let addrs: Vec<String> = instances.iter().map(Instance::http_addr).collect();
        let haproxy = Haproxy::start_with(&addrs, &health_path).await;
        haproxy.wait_until_up(&addrs, Duration::from_secs(15)).await;
        Cluster { haproxy, instances, bus, health_path, dir }
    }

    /// `http://127.0.0.1:N/`, the load balancer.
    pub fn url(&self) -> String {
        self.haproxy.url()
    }

    /// Every backend as haproxy sees it now, addresses in the instances' order.
    pub async fn backends(&self) -> Vec<Backend> {
        self.haproxy.backends().await
    }

    /// Waits until haproxy sees exactly the running instances up; returns how long it took.
    pub async fn wait_until_running_are_up(&self, within: Duration) -> Duration {
        let running: Vec<String> =
            self.instances.iter().filter(|i| i.is_running()).map(Instance::http_addr).collect();
        self.haproxy.wait_until_up(&running, within).await
    }

    /// Where the instances' logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The instances' guards kill them (kill_on_drop); the bus and haproxy guards drop after.
        for instance in &mut self.instances {
            if let Some(child) = instance.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// [`READY_PATH`] when the instance serves it, else `/` (a server without a readiness answer
/// serves the demo's 404 there).
async fn health_path(instance: &Instance) -> String {
    match http_status(&instance.http_addr(), READY_PATH).await {
        Ok(404) => "/".into(),
        _ => READY_PATH.into(),
    }
}

/// The status code of `GET path` on `addr`, over plain HTTP/1.0.
pub async fn http_status(addr: &str, path: &str) -> Result<u16, String> {
    let text = http_get(addr, path).await?;
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("no status in {text:?}"))
}

/// `GET path` on `addr` over plain HTTP/1.0: the whole response, headers and body.
pub async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let get = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
        Ok(text)
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path} on {addr}: no answer in 5 s")))
}
