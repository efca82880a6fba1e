//! The `gotalk` command as an operator runs it, as real processes: `serve`'s settings from
//! flags, environment and a config file; its TLS certificate replaced while it runs; the
//! client's trust in the system's certificate authorities; exit statuses that tell a timeout
//! from an unreachable server; one-line errors for a wrong URL or port.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

fn gotalk() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"));
    // Nothing from the test runner's environment may set a flag.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GOTALK_") {
            command.env_remove(name);
        }
    }
    command
}

/// A folder of this test's own in the target directory.
fn folder(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `gotalk serve`, the URLs its banner printed, and its log.
struct Served {
    child: Child,
    ws: String,
    tcp: String,
    log: tokio::sync::watch::Receiver<String>,
}

impl Served {
    /// `serve` with `args` and `env`; a short shutdown, and ports the system picks unless
    /// the arguments say otherwise.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut command = gotalk();
        command.arg("serve").args(["--shutdown-timeout", "1"]).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start gotalk serve");
        let (log_tx, log) = tokio::sync::watch::channel(String::new());
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                log_tx.send_modify(|log| {
                    log.push_str(&line);
                    log.push('\n');
                });
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async |prefix: &str| {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("serve prints its addresses")
                .unwrap()
                .unwrap_or_else(|| panic!("serve ended: {}", log.borrow().as_str()));
            line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).trim().to_owned()
        };
        next("gotalk demo:").await;
        let ws = next("gotalk websocket:").await;
        let tcp = next("gotalk tcp:").await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served { child, ws, tcp, log }
    }

    /// `host:port` of the HTTP listener.
    fn http_addr(&self) -> String {
        authority(&self.ws)
    }

    /// `host:port` of the TCP listener.
    fn tcp_addr(&self) -> String {
        authority(&self.tcp)
    }

    /// Waits until the log holds `needle`.
    async fn logged(&mut self, needle: &str) {
        let found = self.log.wait_for(|log| log.contains(needle));
        let found = tokio::time::timeout(Duration::from_secs(10), found).await.is_ok();
        assert!(found, "no {needle:?} in the log: {}", self.log.borrow().as_str());
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    }
}

fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap().to_owned()
}

async fn run(command: &mut Command) -> Output {
    let out = command.stdin(Stdio::null()).output();
    tokio::time::timeout(Duration::from_secs(30), out).await.expect("gotalk ends").unwrap()
}

/// `gotalk ARGS` with `env`.
async fn gotalk_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = gotalk();
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    run(&mut command).await
}

/// The status of a plain HTTP GET of `/healthz` with `host` in the Host header.
async fn status_for_host(addr: &str, host: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within("http response", stream.read_to_string(&mut response)).await.unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn serve_takes_flags_over_environment_over_config_file_over_defaults() {
    let dir = folder("precedence");
    let file = dir.join("gotalk.toml");
    // Other loopback addresses show which source a listener's address came from.
    std::fs::write(
        &file,
        "# gotalk serve\nhttp = \"127.0.0.4:0\"\ntcp = \"127.0.0.4:0\"\n\
         allow-host = [\"file.example\"]\nmax-connections = 50\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();

    let served = Served::start(&["--config", config], &[]).await;
    assert!(served.ws.starts_with("ws://127.0.0.4:"), "{}", served.ws);
    assert!(served.tcp.starts_with("tcp://127.0.0.4:"), "{}", served.tcp);
    let http = served.http_addr();
    assert!(status_for_host(&http, "file.example").await.contains(" 200 "), "from the file");
    assert!(status_for_host(&http, "other.example").await.contains(" 421 "));
    drop(served);

    // The environment wins over the file, a list in one variable split at commas; what it
    // leaves out still comes from the file (named by GOTALK_CONFIG this time).
    let env = [
        ("GOTALK_CONFIG", config),
        ("GOTALK_HTTP", "127.0.0.3:0"),
        ("GOTALK_ALLOW_HOST", "env1.example,env2.example"),
    ];
    let served = Served::start(&[], &env).await;
    assert!(served.ws.starts_with("ws://127.0.0.3:"), "{}", served.ws);
    assert!(served.tcp.starts_with("tcp://127.0.0.4:"), "{}", served.tcp);
    let http = served.http_addr();
    for (host, status) in [("env1.example", 200), ("env2.example", 200), ("file.example", 421)] {
        let got = status_for_host(&http, host).await;
        assert!(got.contains(&format!(" {status} ")), "{host}: {got}");
    }
    drop(served);

    // A flag wins over both.
    let served = Served::start(&["--http", "127.0.0.2:0", "--allow-host=flag.example"], &env).await;
    assert!(served.ws.starts_with("ws://127.0.0.2:"), "{}", served.ws);
    assert!(served.tcp.starts_with("tcp://127.0.0.4:"), "{}", served.tcp);
    let http = served.http_addr();
    assert!(status_for_host(&http, "flag.example").await.contains(" 200 "));
    assert!(status_for_host(&http, "env1.example").await.contains(" 421 "));
    drop(served);

    // Without any of them, the defaults: only loopback names on a loopback address.
    let served = Served::start(&["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"], &[]).await;
    let http = served.http_addr();
    assert!(status_for_host(&http, "file.example").await.contains(" 421 "));
    assert!(status_for_host(&http, "localhost").await.contains(" 200 "));
}

#[tokio::test]
async fn serve_help_names_each_flags_variable_and_the_config_file() {
    let out = gotalk_with(&["serve", "--help"], &[]).await;
    let help = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in ["[env: GOTALK_HTTP=]", "[env: GOTALK_TLS_RELOAD_INTERVAL=]", "--config <FILE>"] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_or_a_bad_value_is_refused() {
    let dir = folder("bad_config");
    let (unknown, bad_value, nested) =
        (dir.join("unknown.toml"), dir.join("bad-value.toml"), dir.join("nested.toml"));
    std::fs::write(&unknown, "http = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    std::fs::write(&bad_value, "tcp = \"127.0.0.1:0\"\nread-timeout = \"soon\"\n").unwrap();
    std::fs::write(&nested, "[serve]\nhttp = \"127.0.0.1:0\"\n").unwrap();

    let out = gotalk_with(&["serve", "--config", unknown.to_str().unwrap()], &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `listen`"), "{stderr}");
    assert!(stderr.contains(unknown.to_str().unwrap()), "names the file: {stderr}");

    let out = gotalk_with(&["serve", "--config", nested.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown key `serve`"), "{}", text(&out.stderr));

    let out = gotalk_with(&["serve", "--config", bad_value.to_str().unwrap()], &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(bad_value.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("--read-timeout"), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");

    // A variable with a bad value is refused as the flag would be.
    let out = gotalk_with(&["serve"], &[("GOTALK_MAX_CONNECTIONS", "many")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--max-connections"), "{}", text(&out.stderr));
}

/// Two self-signed certificates for `localhost` and 127.0.0.1, as (cert, key) PEM pairs.
fn two_certificates() -> [(String, String); 2] {
    let one = || {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        (certified.cert.pem(), certified.key_pair.serialize_pem())
    };
    [one(), one()]
}

fn der(pem: &str) -> Vec<u8> {
    gotalk::tls::certs_from_pem(pem.as_bytes()).unwrap()[0].to_vec()
}

/// The certificate a new TLS connection to `addr` is shown, trusting `pems`.
async fn presented(addr: &str, pems: &[&str]) -> Vec<u8> {
    let tls = gotalk::tls::client_config(pems.concat().as_bytes()).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls));
    let stream = within("tls handshake", connector.connect(name, stream)).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Writes the pair where serve reads it; the key first, as a renewal might.
fn install(cert: &Path, key: &Path, pair: &(String, String)) {
    std::fs::write(key, &pair.1).unwrap();
    std::fs::write(cert, &pair.0).unwrap();
}

/// Polls until a new connection to `addr` is shown `want`.
async fn until_presented(addr: &str, trusted: &[&str], want: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while presented(addr, trusted).await != want {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_reloads_its_certificate_when_the_files_change_and_keeps_it_when_they_are_bad() {
    let dir = folder("reload_poll");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let [a, b] = two_certificates();
    install(&cert, &key, &a);
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-reload-interval",
        "0.1",
    ];
    let mut served = Served::start(&args, &[]).await;
    let (tcp, https) = (served.tcp_addr(), served.http_addr());
    let trusted = [a.0.as_str(), b.0.as_str()];
    assert_eq!(presented(&tcp, &trusted).await, der(&a.0));

    install(&cert, &key, &b);
    until_presented(&tcp, &trusted, &der(&b.0)).await;
    assert_eq!(presented(&https, &trusted).await, der(&b.0), "https and wss too");
    served.logged("TLS certificate reloaded").await;

    // A certificate that is not PEM: logged, and B stays in use.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    served.logged("TLS certificate not reloaded").await;
    assert_eq!(presented(&tcp, &trusted).await, der(&b.0));
    assert_eq!(presented(&https, &trusted).await, der(&b.0));
    // A's certificate with B's key: refused too.
    std::fs::write(&cert, &a.0).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presented(&tcp, &trusted).await, der(&b.0));
    assert!(served.child.try_wait().unwrap().is_none(), "serve still runs");
}

#[tokio::test]
async fn serve_reloads_its_certificate_on_sighup() {
    let dir = folder("reload_hup");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let [a, b] = two_certificates();
    install(&cert, &key, &a);
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // 0: the files are not polled, so only the signal can bring B.
    let args = ["--tls-cert", cert_arg, "--tls-key", key_arg, "--tls-reload-interval", "0"];
    let mut served = Served::start(&args, &[]).await;
    let tcp = served.tcp_addr();
    let trusted = [a.0.as_str(), b.0.as_str()];

    install(&cert, &key, &b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(&tcp, &trusted).await, der(&a.0), "no reload before the signal");
    served.signal("-HUP");
    until_presented(&tcp, &trusted, &der(&b.0)).await;

    std::fs::write(&key, "garbage").unwrap();
    served.signal("-HUP");
    served.logged("TLS certificate not reloaded (SIGHUP)").await;
    assert_eq!(presented(&tcp, &trusted).await, der(&b.0));
    assert!(served.child.try_wait().unwrap().is_none(), "SIGHUP does not end serve");
}

#[tokio::test]
async fn the_client_trusts_the_system_authorities_unless_given_its_own() {
    let dir = folder("system_roots");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let [a, b] = two_certificates();
    install(&cert, &key, &a);
    let other = dir.join("other.pem");
    std::fs::write(&other, &b.0).unwrap();
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let served = Served::start(&["--tls-cert", cert_arg, "--tls-key", key_arg], &[]).await;
    let greet = r#"{"name":"ops"}"#;
    for url in [served.tcp.as_str(), served.ws.as_str()] {
        // The system's store, moved to A's certificate the way OpenSSL's tools are.
        let out = gotalk_with(&["call", url, "greet", greet], &[("SSL_CERT_FILE", cert_arg)]).await;
        assert!(out.status.success(), "{url}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "{\"greeting\":\"Hello ops\"}\n");

        // The real system store does not know A: unreachable, saying what to do.
        let out = gotalk_with(&["call", url, "greet", greet], &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{url}: {stderr}");
        assert!(stderr.contains("invalid peer certificate"), "{stderr}");
        assert!(stderr.contains("--ca"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

        // --ca replaces the system's store: A alone is trusted, whatever it holds.
        let other_arg = other.to_str().unwrap();
        let with_ca = ["call", "--ca", cert_arg, url, "greet", greet];
        let out = gotalk_with(&with_ca, &[("SSL_CERT_FILE", other_arg)]).await;
        assert!(out.status.success(), "{url}: {}", text(&out.stderr));
        let with_other = ["call", "--ca", other_arg, url, "greet", greet];
        let out = gotalk_with(&with_other, &[("SSL_CERT_FILE", cert_arg)]).await;
        assert_eq!(out.status.code(), Some(3), "{url}: {}", text(&out.stderr));
    }
}

/// A port nobody listens on: bound, then freed.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_call_that_times_out_exits_5_and_one_that_cannot_connect_exits_3() {
    // Accepts connections (the kernel does, into the backlog) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    for url in [format!("tcp://{addr}"), format!("ws://{addr}/gotalk/")] {
        let started = std::time::Instant::now();
        let out = gotalk_with(&["call", "--timeout", "0.5", &url, "echo"], &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{url}: {stderr}");
        assert!(stderr.contains("timed out after 500ms"), "{stderr}");
        assert!(stderr.contains(&url), "names the url: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    let closed = closed_port();
    for url in [format!("tcp://{closed}"), format!("ws://{closed}/gotalk/")] {
        let out = gotalk_with(&["call", "--timeout", "5", &url, "echo"], &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{url}: {stderr}");
        assert!(stderr.contains(&closed), "names the address: {stderr}");
        assert!(stderr.contains("nothing listens"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    drop(silent);

    // The table is in every client command's help.
    for command in ["call", "notify", "listen"] {
        let out = gotalk_with(&[command, "--help"], &[]).await;
        let help = text(&out.stdout);
        assert!(help.contains("5  timed out (--timeout)"), "{command}: {help}");
        assert!(help.contains("3  cannot reach a gotalk server"), "{command}: {help}");
    }
}

#[tokio::test]
async fn a_wrong_url_or_port_is_a_one_line_error_naming_it() {
    let served = Served::start(&["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"], &[]).await;
    let (http, tcp) = (served.http_addr(), served.tcp_addr());
    let one_line = |out: &Output| {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!stderr.to_ascii_lowercase().contains("<html"), "{stderr}");
        stderr
    };

    // The page at `/` (the demo) and a path with nothing there.
    for path in ["/", "/chat"] {
        let url = format!("ws://{http}{path}");
        let stderr = one_line(&gotalk_with(&["call", &url, "echo"], &[]).await);
        assert!(stderr.contains(&format!("{url} is not a gotalk WebSocket endpoint")), "{stderr}");
        assert!(stderr.contains(&format!("try ws://{http}/gotalk/")), "{stderr}");
    }

    // The TCP port, reached as a WebSocket.
    let url = format!("ws://{tcp}/gotalk/");
    let stderr = one_line(&gotalk_with(&["call", "--timeout", "5", &url, "echo"], &[]).await);
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("tcp://"), "{stderr}");

    // The HTTP port, reached as gotalk over TCP: HTTP waits for a request line that never
    // comes, so this one is a timeout, saying what to check.
    let url = format!("tcp://{http}");
    let out = gotalk_with(&["call", "--timeout", "1", &url, "echo"], &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{url} (no gotalk handshake; is it a gotalk TCP port?)")));

    // The plain TCP port, reached over TLS.
    let url = format!("tls://{tcp}");
    let stderr = one_line(&gotalk_with(&["call", "--timeout", "5", &url, "echo"], &[]).await);
    assert!(stderr.contains(&url) && stderr.contains("tcp://"), "{stderr}");

    // Another service that speaks first, as SSH or SMTP do.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = other.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let url = format!("tcp://{other_addr}");
    let stderr = one_line(&gotalk_with(&["call", "--timeout", "5", &url, "echo"], &[]).await);
    assert!(stderr.contains(&format!("{url} is not a gotalk server")), "{stderr}");
    assert!(stderr.contains("ws://host:port/gotalk/"), "{stderr}");

    // And the right ones work.
    let ok = gotalk_with(&["call", &served.ws, "greet", r#"{"name":"a"}"#], &[]).await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}
