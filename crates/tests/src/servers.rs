//! Real bus servers and a real load balancer for the cluster tests: Debian's `redis-server`,
//! `nats-server` and `haproxy` (installed by `scripts/setup.sh`), each started on free ports
//! of 127.0.0.1 with its files in a temporary directory, and killed by its guard.
//!
//! Never the default ports: the Debian packages may run system services on 6379 and 4222.
//! Each `start` waits until the server answers (polling, at most [`READY_WITHIN`]) and panics
//! with the server's log when it does not. Dropping a guard kills the process (SIGKILL, then
//! waits for it) and removes its directory.
//!
//! Tests that cannot find the binaries fail, naming `scripts/setup.sh`; a local run may set
//! `GOTALK_CLUSTER_TESTS=skip` and check [`skip_cluster_tests`] first.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// How long a server may take to answer its readiness probe before its start fails.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// How often readiness and state are polled.
const POLL: Duration = Duration::from_millis(20);

/// True when `GOTALK_CLUSTER_TESTS=skip`: the caller should print that it skipped, loudly, and
/// return. Without the variable the cluster tests run and fail on a machine that lacks the
/// servers, as CI must.
pub fn skip_cluster_tests() -> bool {
    let skip = std::env::var("GOTALK_CLUSTER_TESTS").is_ok_and(|v| v == "skip");
    if skip {
        eprintln!("SKIPPED: GOTALK_CLUSTER_TESTS=skip, the cluster test does not run");
    }
    skip
}

/// A port of 127.0.0.1 that is free now and that nothing else will be given meanwhile, for a
/// server started as a process, which cannot be handed a bound socket.
///
/// Not the system's pick for port 0: that comes from the ephemeral range, which every socket
/// bound to port 0 and every outgoing connection draws from too, so between the pick and the
/// server's bind a test running beside it could take the port (it happened about once in 400
/// runs of the suite). These come from below that range, where the system never allocates:
/// each process walks its own stretch of it from a random start, and a port is handed out
/// once per process, after a bind shows it free.
pub fn free_port() -> u16 {
    static START: OnceLock<u64> = OnceLock::new();
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    let (low, high) = below_ephemeral();
    let span = u64::from(high - low);
    let start = *START.get_or_init(random_u64);
    for _ in 0..span {
        let port = low + ((start + TAKEN.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {low}..{high}");
}

/// The ports just below the system's ephemeral range: at most 16,384 of them, from 1024 up.
fn below_ephemeral() -> (u16, u16) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(2048);
    (ephemeral_low.saturating_sub(16384).max(1024), ephemeral_low)
}

/// A user and password a bus accepts, allowed only the names under `prefix`.
#[derive(Clone, Debug)]
pub struct Auth {
    /// The user name.
    pub user: String,
    /// Letters and digits only, so it goes into a URL as is.
    pub password: String,
    /// The one name prefix the user may use, without separator: `gotalk` allows Redis keys
    /// and channels `gotalk:*`, NATS subjects `gotalk.>`.
    pub prefix: String,
}

impl Auth {
    /// User `gotalk` with a fresh random password, limited to `prefix`.
    pub fn new(prefix: &str) -> Auth {
        Auth { user: "gotalk".into(), password: random_token(), prefix: prefix.into() }
    }
}

/// The commands the limited Redis user may run, besides `@connection` (AUTH, HELLO, PING…)
/// without its `@admin` and `@dangerous` ones (CLIENT KILL, CLIENT PAUSE…):
/// pub/sub (plain and sharded), channel counts, and the key operations the cluster mode's
/// history, presence and liveness need. Keys and channels are limited to the prefix anyway.
pub const REDIS_USER_COMMANDS: &[&str] = &[
    "publish",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "spublish",
    "ssubscribe",
    "sunsubscribe",
    "pubsub|numsub",
    "pubsub|shardnumsub",
    "pubsub|channels",
    "pubsub|shardchannels",
    "get",
    "set",
    "del",
    "exists",
    "expire",
    "pexpire",
    "ttl",
    "pttl",
    "incr",
    "sadd",
    "srem",
    "scard",
    "smembers",
    "hset",
    "hget",
    "hdel",
    "hgetall",
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zremrangebyscore",
    "xadd",
    "xrange",
    "xrevrange",
    "xlen",
    "xtrim",
    "eval",
    "evalsha",
    "script|load",
];

/// A `redis-server` (no persistence) on a free port of 127.0.0.1.
pub struct Redis {
    process: Process,
    port: u16,
    auth: Option<Auth>,
    /// With `auth`, the harness's own all-powerful user, since `default` is off.
    admin: Option<Auth>,
    // Dropped after `process`, which may still be writing into it.
    _dir: TempDir,
}

impl Redis {
    /// A Redis whose `default` user may do anything without a password.
    pub async fn start() -> Redis {
        Redis::launch(None).await
    }

    /// A Redis with `default` off and one ACL user, `auth`, limited to keys and channels
    /// `<prefix>:*` and to [`REDIS_USER_COMMANDS`].
    pub async fn start_with(auth: Auth) -> Redis {
        Redis::launch(Some(auth)).await
    }

    async fn launch(auth: Option<Auth>) -> Redis {
        let dir = TempDir::new("redis");
        let port = free_port();
        let admin = auth.as_ref().map(|_| Auth {
            user: "harness".into(),
            password: random_token(),
            prefix: String::new(),
        });
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\nsave \"\"\n\
             appendonly no\ndir \"{}\"\nlogfile \"\"\n",
            dir.path().display()
        );
        if let (Some(auth), Some(admin)) = (&auth, &admin) {
            let commands: String = REDIS_USER_COMMANDS.iter().map(|c| format!(" +{c}")).collect();
            let _ = writeln!(
                conf,
                "user default off\nuser {} on >{} resetkeys resetchannels ~{p}:* &{p}:* -@all \
                 +@connection -@admin -@dangerous{commands}\nuser {} on >{} ~* &* +@all",
                auth.user,
                auth.password,
                admin.user,
                admin.password,
                p = auth.prefix,
            );
        }
        let conf_path = dir.path().join("redis.conf");
        fs::write(&conf_path, conf).expect("write redis.conf");
        let process = Process::new("redis-server", vec![conf_path.into()], dir.path());
        let mut redis = Redis { process, port, auth, admin, _dir: dir };
        redis.run().await;
        redis
    }

    async fn run(&mut self) {
        let (port, admin) = (self.port, self.admin.clone());
        self.process
            .start_until("redis-server", || {
                let admin = admin.clone();
                async move {
                    let reply = command(port, admin.as_ref(), &["PING"]).await?;
                    if reply == "+PONG" {
                        Ok(())
                    } else {
                        Err(format!("PING: {reply}"))
                    }
                }
            })
            .await;
    }

    /// `redis://127.0.0.1:N`, with `user:password@` when it has an ACL user.
    pub fn url(&self) -> String {
        match &self.auth {
            Some(a) => format!("redis://{}:{}@127.0.0.1:{}", a.user, a.password, self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The limited user, if it was started with one.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Runs one command as a user who may do anything and returns the first line of the
    /// reply (`+OK`, `:2`, `-ERR …`, `*3` for an array): for tests that inspect or disturb the
    /// server (`PUBSUB NUMSUB`, `CLIENT KILL TYPE pubsub`).
    pub async fn admin_command(&self, args: &[&str]) -> String {
        command(self.port, self.admin.as_ref(), args)
            .await
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// As [`admin_command`](Self::admin_command), authenticated as the limited user.
    pub async fn user_command(&self, args: &[&str]) -> String {
        let auth = self.auth.as_ref().expect("this Redis was started without a user");
        command(self.port, Some(auth), args).await.unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again (killing it first if it runs) on the same port with the same
    /// configuration, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.run().await;
    }

    /// SIGSTOP: it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.process.stop();
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.process.signal("CONT");
    }
}

/// The commands a limited user of a Redis Cluster needs besides [`REDIS_USER_COMMANDS`]: the
/// client learns where the slots are with `CLUSTER SLOTS`.
pub const REDIS_CLUSTER_USER_COMMANDS: &[&str] = &["cluster|slots"];

/// A Redis Cluster of three masters (no replicas, no persistence), each a `redis-server` on a
/// free port of 127.0.0.1 with its own directory, joined by `redis-cli --cluster create`.
/// `start` waits until every node says `cluster_state:ok`.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    auth: Option<Auth>,
    admin: Option<Auth>,
}

struct ClusterNode {
    process: Process,
    port: u16,
    _dir: TempDir,
}

impl RedisCluster {
    /// How many masters it has.
    pub const NODES: usize = 3;

    /// A cluster whose `default` user may do anything without a password.
    pub async fn start() -> RedisCluster {
        RedisCluster::launch(None).await
    }

    /// A cluster with `default` off and one ACL user, `auth`, limited as
    /// [`Redis::start_with`]'s, plus [`REDIS_CLUSTER_USER_COMMANDS`].
    pub async fn start_with(auth: Auth) -> RedisCluster {
        RedisCluster::launch(Some(auth)).await
    }

    async fn launch(auth: Option<Auth>) -> RedisCluster {
        let admin = auth.as_ref().map(|_| Auth {
            user: "harness".into(),
            password: random_token(),
            prefix: String::new(),
        });
        let mut nodes = Vec::new();
        for _ in 0..Self::NODES {
            let dir = TempDir::new("redis-cluster");
            // The cluster bus's port is port + 10000 unless set: past 65535 for some free
            // ports, taken for others.
            let (port, bus_port) = (free_port(), free_port());
            let mut conf = format!(
                "port {port}\ncluster-port {bus_port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\nsave \"\"\n\
                 appendonly no\ndir \"{}\"\nlogfile \"\"\ncluster-enabled yes\n\
                 cluster-config-file nodes.conf\ncluster-node-timeout 2000\n",
                dir.path().display()
            );
            if let (Some(auth), Some(admin)) = (&auth, &admin) {
                let commands: String = REDIS_USER_COMMANDS
                    .iter()
                    .chain(REDIS_CLUSTER_USER_COMMANDS)
                    .map(|c| format!(" +{c}"))
                    .collect();
                let _ = writeln!(
                    conf,
                    "user default off\nuser {} on >{} resetkeys resetchannels ~{p}:* &{p}:* \
                     -@all +@connection -@admin -@dangerous{commands}\nuser {} on >{} ~* &* +@all",
                    auth.user,
                    auth.password,
                    admin.user,
                    admin.password,
                    p = auth.prefix,
                );
            }
            let conf_path = dir.path().join("redis.conf");
            fs::write(&conf_path, conf).expect("write redis.conf");
            let process = Process::new("redis-server", vec![conf_path.into()], dir.path());
            nodes.push(ClusterNode { process, port, _dir: dir });
        }
        let mut cluster = RedisCluster { nodes, auth, admin };
        cluster.run_nodes().await;
        cluster.create();
        cluster.wait_ok().await;
        cluster
    }

    async fn run_nodes(&mut self) {
        for node in &mut self.nodes {
            let (port, admin) = (node.port, self.admin.clone());
            node.process
                .start_until("redis-server (cluster node)", || {
                    let admin = admin.clone();
                    async move {
                        let reply = command(port, admin.as_ref(), &["PING"]).await?;
                        if reply == "+PONG" {
                            Ok(())
                        } else {
                            Err(format!("PING: {reply}"))
                        }
                    }
                })
                .await;
        }
    }

    /// `redis-cli --cluster create`: spreads the slots over the nodes.
    fn create(&self) {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        if let Some(admin) = &self.admin {
            args.extend([
                "--user".into(),
                admin.user.clone(),
                "--pass".into(),
                admin.password.clone(),
            ]);
        }
        let out = Command::new(find_binary("redis-cli"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until every node says `cluster_state:ok`.
    async fn wait_ok(&self) {
        let start = Instant::now();
        for node in &self.nodes {
            loop {
                let info = bulk_command(node.port, self.admin.as_ref(), &["CLUSTER", "INFO"]).await;
                match info {
                    Ok(info) if info.contains("cluster_state:ok") => break,
                    other => assert!(
                        start.elapsed() < READY_WITHIN * 3,
                        "node {} not ok within {:?}: {other:?}",
                        node.port,
                        READY_WITHIN * 3
                    ),
                }
                tokio::time::sleep(POLL * 5).await;
            }
        }
    }

    /// `redis+cluster://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C`, with `user:password@` when it
    /// has an ACL user.
    pub fn url(&self) -> String {
        let hosts: Vec<String> =
            self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let user = self.auth.as_ref().map(|a| format!("{}:{}@", a.user, a.password));
        format!("redis+cluster://{}{}", user.unwrap_or_default(), hosts.join(","))
    }

    /// The first node's port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// As [`Redis::admin_command`], on the node with port `port`.
    pub async fn admin_command(&self, port: u16, args: &[&str]) -> String {
        command(port, self.admin.as_ref(), args)
            .await
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// SIGKILL to every node, and waits for them to be gone.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
        }
    }

    /// Starts every node again (killing it first if it runs) on the same ports, with the same
    /// cluster configuration and no data, and waits until the cluster is ok again.
    pub async fn restart(&mut self) {
        self.kill();
        self.run_nodes().await;
        self.wait_ok().await;
    }

    /// SIGSTOP to every node.
    pub fn pause(&self) {
        for node in &self.nodes {
            node.process.stop();
        }
    }

    /// SIGCONT to every node after [`pause`](Self::pause).
    pub fn resume(&self) {
        for node in &self.nodes {
            node.process.signal("CONT");
        }
    }
}

/// A `nats-server` (core NATS, no JetStream) on a free port of 127.0.0.1, with its monitoring
/// endpoint (`/varz`, `/connz`, `/subsz`) on another.
pub struct Nats {
    process: Process,
    port: u16,
    monitor_port: u16,
    auth: Option<Auth>,
    _dir: TempDir,
}

impl Nats {
    /// A NATS that lets anyone in.
    pub async fn start() -> Nats {
        Nats::launch(None, "_INBOX").await
    }

    /// A NATS with one user, `auth`, who may publish and subscribe only to `<prefix>.>` and
    /// `<inbox_prefix>.>` (`_INBOX` is the clients' default inbox prefix).
    pub async fn start_with(auth: Auth, inbox_prefix: &str) -> Nats {
        Nats::launch(Some(auth), inbox_prefix).await
    }

    async fn launch(auth: Option<Auth>, inbox_prefix: &str) -> Nats {
        let dir = TempDir::new("nats");
        let (port, monitor_port) = (free_port(), free_port());
        let mut args: Vec<OsString> = ["-a", "127.0.0.1", "-p", &port.to_string()]
            .into_iter()
            .chain(["-m", &monitor_port.to_string()])
            .map(OsString::from)
            .collect();
        if let Some(auth) = &auth {
            let allow = format!("[\"{}.>\", \"{inbox_prefix}.>\"]", auth.prefix);
            let conf = format!(
                "authorization {{\n  users = [\n    {{ user: \"{}\", password: \"{}\", \
                 permissions: {{ publish: {{ allow: {allow} }}, subscribe: {{ allow: {allow} }} \
                 }} }}\n  ]\n}}\n",
                auth.user, auth.password
            );
            let conf_path = dir.path().join("nats.conf");
            fs::write(&conf_path, conf).expect("write nats.conf");
            args.push("-c".into());
            args.push(conf_path.into());
        }
        let process = Process::new("nats-server", args, dir.path());
        let mut nats = Nats { process, port, monitor_port, auth, _dir: dir };
        nats.run().await;
        nats
    }

    async fn run(&mut self) {
        let (port, monitor_port) = (self.port, self.monitor_port);
        self.process
            .start_until("nats-server", || async move {
                let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(str)?;
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line).await.map_err(str)?;
                if !line.starts_with("INFO ") {
                    return Err(format!("first line {line:?}, not INFO"));
                }
                TcpStream::connect(("127.0.0.1", monitor_port)).await.map_err(str)?;
                Ok(())
            })
            .await;
    }

    /// `nats://127.0.0.1:N`, with `user:password@` when it has a user.
    pub fn url(&self) -> String {
        match &self.auth {
            Some(a) => format!("nats://{}:{}@127.0.0.1:{}", a.user, a.password, self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// `http://127.0.0.1:M`, the monitoring endpoint.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The client port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user, if it was started with one.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again (killing it first if it runs) on the same ports with the same
    /// configuration, and waits until it answers.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.run().await;
    }

    /// SIGSTOP: it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.process.stop();
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.process.signal("CONT");
    }
}

/// One backend server as haproxy sees it (`show stat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The `host:port` it was given.
    pub addr: String,
    /// haproxy's status: `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (going up)…
    pub status: String,
    /// The last health check's result: `L7OK`, `L4CON` (refused), `INI` (none yet)…
    pub check: String,
}

impl Backend {
    /// Whether haproxy sends it traffic, having seen at least one health check pass.
    pub fn is_up(&self) -> bool {
        self.status.starts_with("UP") && self.check != "INI"
    }
}

/// An `haproxy` in HTTP mode on a free port of 127.0.0.1, spreading requests and WebSocket
/// connections round-robin over HTTP backends that it health-checks every 200 ms (two failed
/// checks mark one down, two passing ones bring it back).
pub struct Haproxy {
    process: Process,
    port: u16,
    backends: Vec<String>,
    stats_socket: PathBuf,
    _dir: TempDir,
}

impl Haproxy {
    /// A load balancer over `backends` (`host:port` each), health-checked with `GET /`.
    /// Waits until its port accepts and at least one backend is up.
    pub async fn start(backends: &[String]) -> Haproxy {
        Haproxy::start_with(backends, "/").await
    }

    /// As [`start`](Self::start), health-checked with `GET health_path`.
    pub async fn start_with(backends: &[String], health_path: &str) -> Haproxy {
        assert!(!backends.is_empty(), "haproxy needs at least one backend");
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let stats_socket = dir.path().join("admin.sock");
        let mut conf = format!(
            "global\n  stats socket {} mode 600 level admin\n  maxconn 4096\n\
             defaults\n  mode http\n  option redispatch\n  retries 2\n  timeout connect 1s\n\
             timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n\
             timeout http-request 10s\n  default-server check inter 200ms fall 2 rise 2\n\
             frontend front\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk GET {health_path}\n",
            stats_socket.display()
        );
        for (i, addr) in backends.iter().enumerate() {
            let _ = writeln!(conf, "  server g{i} {addr}");
        }
        let conf_path = dir.path().join("haproxy.cfg");
        fs::write(&conf_path, conf).expect("write haproxy.cfg");
        // -db: stay in the foreground, where the guard can kill it.
        let args = vec!["-db".into(), "-f".into(), conf_path.into()];
        let process = Process::new("haproxy", args, dir.path());
        let mut haproxy =
            Haproxy { process, port, backends: backends.to_vec(), stats_socket, _dir: dir };
        let (socket, count) = (haproxy.stats_socket.clone(), backends.len());
        haproxy
            .process
            .start_until("haproxy", || {
                let socket = socket.clone();
                async move {
                    TcpStream::connect(("127.0.0.1", port)).await.map_err(str)?;
                    let states = show_stat(&socket, count).await?;
                    if states.iter().any(Backend::is_up) {
                        Ok(())
                    } else {
                        Err(format!("no backend up yet: {states:?}"))
                    }
                }
            })
            .await;
        haproxy
    }

    /// `http://127.0.0.1:N/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every backend, in the order given, as haproxy sees it now.
    pub async fn backends(&self) -> Vec<Backend> {
        let mut states = show_stat(&self.stats_socket, self.backends.len())
            .await
            .unwrap_or_else(|e| panic!("haproxy's stats socket: {e}"));
        for (state, addr) in states.iter_mut().zip(&self.backends) {
            state.addr.clone_from(addr);
        }
        states
    }

    /// The backends (`host:port`) haproxy sees as up now.
    pub async fn up(&self) -> Vec<String> {
        self.backends().await.into_iter().filter(Backend::is_up).map(|b| b.addr).collect()
    }

    /// Waits until exactly `addrs` (in any order) are up, and panics with haproxy's view if
    /// that takes more than `within`. Returns how long it took.
    pub async fn wait_until_up(&self, addrs: &[String], within: Duration) -> Duration {
        let mut want = addrs.to_vec();
        want.sort();
        let start = Instant::now();
        loop {
            let mut up = self.up().await;
            up.sort();
            if up == want {
                return start.elapsed();
            }
            if start.elapsed() > within {
                panic!(
                    "haproxy: wanted {want:?} up within {within:?}, sees {:?}",
                    self.backends().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `show stat` over the admin socket: the `count` servers of backend `gateways`, in order
/// (`addr` holds haproxy's server name until the caller fills it in).
async fn show_stat(socket: &Path, count: usize) -> Result<Vec<Backend>, String> {
    let mut stream = UnixStream::connect(socket).await.map_err(str)?;
    stream.write_all(b"show stat\n").await.map_err(str)?;
    let mut csv = String::new();
    stream.read_to_string(&mut csv).await.map_err(str)?;
    let mut lines = csv.lines();
    let header: Vec<&str> =
        lines.next().ok_or("empty show stat")?.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no {name}"));
    let (px, sv, status, check) =
        (column("pxname")?, column("svname")?, column("status")?, column("check_status")?);
    let mut states = Vec::new();
    for i in 0..count {
        let name = format!("g{i}");
        let row = lines
            .clone()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|r| r.get(px) == Some(&"gateways") && r.get(sv) == Some(&name.as_str()))
            .ok_or_else(|| format!("no server {name} in {csv:?}"))?;
        states.push(Backend {
            addr: name,
            status: row.get(status).unwrap_or(&"").to_string(),
            check: row.get(check).unwrap_or(&"").trim_start_matches("* ").to_string(),
        });
    }
    Ok(states)
}

/// Sends one command in RESP (after `AUTH` when `auth` is given) and returns the first line of
/// its reply.
async fn command(port: u16, auth: Option<&Auth>, args: &[&str]) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(str)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if let Some(auth) = auth {
        stream
            .get_mut()
            .write_all(&resp(&["AUTH", &auth.user, &auth.password]))
            .await
            .map_err(str)?;
        stream.read_line(&mut line).await.map_err(str)?;
        if line.trim_end() != "+OK" {
            return Err(format!("AUTH {}: {}", auth.user, line.trim_end()));
        }
        line.clear();
    }
    stream.get_mut().write_all(&resp(args)).await.map_err(str)?;
    stream.read_line(&mut line).await.map_err(str)?;
    if line.is_empty() {
        return Err("connection closed before a reply".into());
    }
    Ok(line.trim_end().to_owned())
}

/// As [`command`], for a command that answers with one bulk string: returns its text.
async fn bulk_command(port: u16, auth: Option<&Auth>, args: &[&str]) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(str)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if let Some(auth) = auth {
        stream
            .get_mut()
            .write_all(&resp(&["AUTH", &auth.user, &auth.password]))
            .await
            .map_err(str)?;
        stream.read_line(&mut line).await.map_err(str)?;
        if line.trim_end() != "+OK" {
            return Err(format!("AUTH {}: {}", auth.user, line.trim_end()));
        }
        line.clear();
    }
    stream.get_mut().write_all(&resp(args)).await.map_err(str)?;
    stream.read_line(&mut line).await.map_err(str)?;
    let Some(len) = line.trim_end().strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
        return Err(format!("not a bulk string: {}", line.trim_end()));
    };
    let mut body = vec![0; len + 2];
    stream.read_exact(&mut body).await.map_err(str)?;
    body.truncate(len);
    String::from_utf8(body).map_err(|e| e.to_string())
}

/// A command as a RESP array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n{a}\r\n", a.len());
    }
    out.into_bytes()
}

/// A child process started again and again with the same arguments, its stdout and stderr
/// appended to `log`, killed on drop.
struct Process {
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(name: &str, args: Vec<OsString>, dir: &Path) -> Process {
        Process {
            program: find_binary(name),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Spawns it and polls `probe` until it answers, the process exits, or [`READY_WITHIN`]
    /// passes; the last two panic with the probe's last error and the log.
    async fn start_until<F, Fut>(&mut self, what: &str, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let log = File::options().create(true).append(true).open(&self.log).expect("open log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let error = match tokio::time::timeout(POLL * 10, probe()).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "the probe did not finish".into(),
            };
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > READY_WITHIN {
                let how = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("not ready within {READY_WITHIN:?}"),
                };
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                self.kill();
                panic!("{what} {how}; last probe: {error}\n--- {} ---\n{log}", self.log.display());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is not running").id()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIGNAL` (`STOP`, `CONT`) with kill(1): the workspace forbids `unsafe`.
    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-s", signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid}: {status}");
    }

    /// SIGSTOP, and waits until every thread has stopped: a stop takes effect as each thread
    /// next runs, and on a busy machine a thread of the server can still be at work after
    /// kill(1) has returned.
    fn stop(&self) {
        self.signal("STOP");
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let start = Instant::now();
        while !all_stopped(&tasks) {
            assert!(start.elapsed() < READY_WITHIN, "{} did not stop", self.program.display());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether every thread listed in `/proc/PID/task` is stopped (state `T`).
fn all_stopped(tasks: &Path) -> bool {
    let Ok(entries) = fs::read_dir(tasks) else { return false };
    entries.flatten().all(|task| {
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command's closing parenthesis: `PID (comm) S ...`.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        matches!(state, Some('T' | 't'))
    })
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `name` on PATH or in /usr/sbin (where Debian puts daemons, off some users' PATH); panics
/// naming the setup script when it is in neither.
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run scripts/setup.sh (it installs Debian's {name}), \
                 or set GOTALK_CLUSTER_TESTS=skip to skip the cluster tests locally"
            )
        })
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "gotalk-{what}-{}-{n}-{}",
            std::process::id(),
            random_token()
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// 16 hex digits from the standard library's per-process random hash keys.
fn random_token() -> String {
    format!("{:016x}", random_u64())
}

fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

fn str(e: io::Error) -> String {
    e.to_string()
}
