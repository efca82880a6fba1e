//! `packaging/gotalk.service` and `packaging/gotalk.toml`: the unit passes `systemd-analyze
//! verify`, its sandbox scores as hardened in `systemd-analyze security`, and the real binary,
//! started with the unit's command line and the example settings under `strace`, serves over
//! WebSocket and TCP and drains using only the system calls, socket families and memory
//! mappings the unit allows. What cannot be run here is systemd itself (no systemd as PID 1):
//! the unit is checked offline, and its seccomp filter against the binary's traced calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging").join(file)
}

fn folder(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tool that scripts/setup.sh installs.
fn tool(name: &str) -> Command {
    let found = std::process::Command::new(name).arg("--version").output();
    assert!(found.is_ok(), "{name} is missing: run scripts/setup.sh");
    Command::new(name)
}

fn unit_text() -> String {
    std::fs::read_to_string(packaging("gotalk.service")).unwrap()
}

/// The unit, with its binary where this build put it, as `gotalk.service` in `dir`.
fn unit_here(dir: &Path) -> PathBuf {
    let unit = unit_text().replace("/usr/local/bin/gotalk", env!("CARGO_BIN_EXE_gotalk-e2e"));
    let path = dir.join("gotalk.service");
    std::fs::write(&path, unit).unwrap();
    path
}

/// The values of `key=` in the unit, in order.
fn directive(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit_text().lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_owned).collect()
}

#[tokio::test]
async fn the_unit_verifies_and_its_sandbox_scores_as_hardened() {
    let unit = unit_here(&folder("verify"));
    let out = tool("systemd-analyze").arg("verify").arg(&unit).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");

    let out = tool("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    for hardened in [
        "User=/DynamicUser=",
        "NoNewPrivileges=",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "SystemCallFilter=~@privileged",
        "MemoryDenyWriteExecute=",
        "RestrictNamespaces=~user",
        "ProtectKernelModules=",
    ] {
        assert!(report.contains(&format!("✓ {hardened} ")), "{hardened} not set:\n{report}");
    }
    // systemd's scale: 0 is locked down, 10 is unprotected; "OK" ends below 2.
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for gotalk.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    assert!(exposure <= 1.5, "exposure {exposure}:\n{report}");
}

/// Every system call in `@group` as `systemd-analyze syscall-filter` lists them, groups
/// within it expanded.
fn syscall_group(groups: &BTreeMap<String, Vec<String>>, name: &str) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    for item in groups.get(name).unwrap_or_else(|| panic!("no group {name}")) {
        if item.starts_with('@') {
            calls.extend(syscall_group(groups, item));
        } else {
            calls.insert(item.clone());
        }
    }
    calls
}

/// What the unit's `SystemCallFilter=` lines allow: the first lists what is allowed, each
/// `~` line takes some away.
async fn allowed_syscalls() -> BTreeSet<String> {
    let out = tool("systemd-analyze").arg("syscall-filter").output().await.unwrap();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(group) = line.strip_prefix('@') {
            current = Some(format!("@{}", group.trim()));
        } else if let Some(group) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.entry(group.clone()).or_default().push(item.to_owned());
            }
        }
    }
    let mut allowed = BTreeSet::new();
    for filter in directive("SystemCallFilter") {
        let (deny, list) = match filter.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, filter.as_str()),
        };
        for item in list.split_whitespace() {
            let calls = if item.starts_with('@') {
                syscall_group(&groups, item)
            } else {
                BTreeSet::from([item.to_owned()])
            };
            if deny {
                allowed.retain(|c| !calls.contains(c));
            } else {
                allowed.extend(calls);
            }
        }
    }
    assert!(allowed.contains("epoll_wait") && !allowed.contains("reboot"), "{allowed:?}");
    allowed
}

#[tokio::test]
async fn serve_under_the_units_command_line_and_settings_uses_only_what_the_unit_allows() {
    let dir = folder("trace");
    let trace = dir.join("strace.txt");
    let exec_start = directive("ExecStart").pop().expect("ExecStart=");
    let mut args: Vec<String> = exec_start.split_whitespace().skip(1).map(str::to_owned).collect();
    let config = packaging("gotalk.toml");
    for arg in &mut args {
        if arg == "/etc/gotalk/gotalk.toml" {
            *arg = config.to_str().unwrap().to_owned();
        }
    }
    assert_eq!(args[..2], ["serve", "--config"], "{exec_start}");
    // Ports of its own: the example's fixed ones may be taken on a test machine.
    args.extend(["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"].map(str::to_owned));
    let mut serve = tool("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_gotalk-e2e"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    while urls.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line = line.expect("serve prints its addresses").unwrap().expect("serve runs");
        if let Some(url) =
            line.strip_prefix("gotalk websocket:").or(line.strip_prefix("gotalk tcp:"))
        {
            urls.push(url.trim().to_owned());
        }
    }
    for url in &urls {
        let call = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
            .args(["call", url, "greet", r#"{"name":"unit"}"#])
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), call).await.unwrap().unwrap();
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // systemctl stop: SIGTERM, to strace's child.
    let pid = serve.id().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let child = children.split_whitespace().next().expect("strace's child").to_owned();
    assert!(std::process::Command::new("kill").args(["-TERM", &child]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), serve.wait()).await.unwrap();
    assert!(status.unwrap().success(), "serve drains and exits 0");

    let allowed = allowed_syscalls().await;
    let families: Vec<String> = directive("RestrictAddressFamilies")
        .iter()
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let traced = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    for line in traced.lines() {
        // `PID name(args) = result`; resumed calls and signals were counted where they began.
        let call = line.split_once(' ').map_or("", |(_, rest)| rest.trim_start());
        let Some((name, args)) = call.split_once('(') else { continue };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        used.insert(name.to_owned());
        if name == "socket" {
            let family = args.split(',').next().unwrap_or_default();
            assert!(families.iter().any(|f| f == family), "RestrictAddressFamilies: {line}");
        }
        if matches!(name, "mmap" | "mprotect") {
            let writable_code = args.contains("PROT_WRITE") && args.contains("PROT_EXEC");
            assert!(!writable_code, "MemoryDenyWriteExecute: {line}");
        }
    }
    assert!(used.contains("accept4") || used.contains("accept"), "the trace is whole: {used:?}");
    let refused: Vec<_> = used.difference(&allowed).collect();
    assert!(refused.is_empty(), "calls the unit's SystemCallFilter refuses: {refused:?}");
}
