//! `gotalk-bench --scenario go` at a tiny size, through the real binary: it builds the Go
//! gotalk echo server from the original module, and loads it, our server and the raw echo with
//! the neutral client over TCP and WebSocket, every answer checked.
//!
//! Without `go` the test is skipped with a loud message, except in CI (`CI` set), where it
//! fails: `.ci/run` installs Debian's `golang-go` for the interop tests.

use std::path::Path;
use std::process::Command;

mod common;

fn go_installed() -> bool {
    let found = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(found || !in_ci, "`go` is not installed: the Go comparison must run in CI");
    if !found {
        eprintln!("\n*** SKIPPED: `go` is not installed; the Go comparison did not run ***\n");
    }
    found
}

#[test]
fn the_go_comparison_runs_every_server_on_every_transport_at_a_tiny_size() {
    if !go_installed() {
        return;
    }
    let go_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-go");
    let stdout = common::run(
        ["--scenario", "go", "--shapes", "1x1,3x4", "--sizes", "32,20000"]
            .into_iter()
            .chain(["--runs", "2", "--secs", "0.2", "--warmup", "0.05"]),
        &[("GOTALK_BENCH_GO_DIR", go_dir.as_os_str())],
    );
    // | transport, payload | shape | Go rt/s | ours | ceiling | ours/Go | ours/ceiling | ...
    let rows = common::rows(&stdout, &["transport"]);
    let cells: Vec<(&str, &str)> = rows.iter().map(|row| (row[0], row[1])).collect();
    assert_eq!(
        cells,
        [
            ("TCP, 32 B", "1 × 1"),
            ("TCP, 32 B", "3 × 4"),
            ("TCP, 20000 B", "1 × 1"),
            ("TCP, 20000 B", "3 × 4"),
            ("WebSocket, 32 B", "1 × 1"),
            ("WebSocket, 32 B", "3 × 4"),
            ("WebSocket, 20000 B", "1 × 1"),
            ("WebSocket, 20000 B", "3 × 4"),
        ],
        "{stdout}"
    );
    let rate = |text: &str| match text.strip_suffix('k') {
        Some(k) => k.parse::<f64>().map(|k| k * 1000.0).ok(),
        None => text.parse::<f64>().ok(),
    };
    for row in &rows {
        // Every server answered round trips, and the ratios were worked out from them.
        for column in 2..=4 {
            assert!(rate(row[column]).is_some_and(|r| r > 0.0), "{row:?}\n{stdout}");
        }
        for column in 5..=6 {
            assert!(row[column].ends_with('x'), "{row:?}\n{stdout}");
        }
    }
    // Two runs per server and cell, the servers taking turns: Go first in the first round,
    // second in the next.
    let first_cell: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("== TCP, 32 B, 1 connection"))
        .filter(|line| line.split_whitespace().nth(1).is_some_and(|run| run == "1" || run == "2"))
        .filter_map(|line| line.split_whitespace().next())
        .take(6)
        .collect();
    assert_eq!(first_cell, ["go", "gotalk", "ceiling", "gotalk", "ceiling", "go"], "{stdout}");
}
