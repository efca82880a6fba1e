//! `gotalk-bench browser` at a tiny size, through the real binary and a real Chromium: every
//! client answers in the page, every row of both tables is filled, and the summary names
//! each target. Speed is the benchmark's business, not this test's: it only checks the
//! benchmark still runs.

mod common;

#[test]
fn the_browser_benchmark_runs_every_client_at_a_tiny_size() {
    let args = ["browser", "--runs", "1", "--secs", "0.1", "--warmup", "0.05", "--loads", "1"];
    let stdout = common::run(args, &[]);
    // The last table (where the first answer's wait goes) is checked apart.
    let (tables, wait) =
        stdout.split_once("== where the wait goes").unwrap_or_else(|| panic!("{stdout}"));
    let rows = common::rows(tables, &["in flight", "visit"]);
    // | in flight | client | median rt/s | min – max | spread | ours / client |
    let throughput: Vec<(&str, &str)> =
        rows.iter().filter(|r| r[0].parse::<u32>().is_ok()).map(|r| (r[0], r[1])).collect();
    let clients = ["ours", "gotalk.js 1.2.1", "raw WebSocket"];
    let want: Vec<(&str, &str)> =
        ["1", "64"].iter().flat_map(|&d| clients.iter().map(move |&c| (d, c))).collect();
    assert_eq!(throughput, want, "{stdout}");
    for row in rows.iter().filter(|r| r[0].parse::<u32>().is_ok()) {
        assert!(row[2].parse::<f64>().is_ok_and(|rps| rps > 0.0), "{row:?}\n{stdout}");
    }
    // | visit | client | median ms | min – max | client − ours | after the script arrived |
    let first: Vec<(&str, &str)> =
        rows.iter().filter(|r| r[0] == "cold" || r[0] == "warm").map(|r| (r[0], r[1])).collect();
    assert_eq!(
        first,
        [
            ("cold", "ours"),
            ("cold", "gotalk.js 1.2.1"),
            ("warm", "ours"),
            ("warm", "gotalk.js 1.2.1")
        ],
        "{stdout}"
    );
    for row in rows.iter().filter(|r| r[0] == "cold" || r[0] == "warm") {
        assert!(row[2].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row:?}\n{stdout}");
        assert!(row[5].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row:?}\n{stdout}");
    }
    // | visit | client | script run | wasm arrived | client ready | answer |: every moment
    // for ours, and for gotalk.js, which has no wasm, its script's run and its answer.
    let wait = common::rows(wait, &["visit"]);
    let clients: Vec<(&str, &str)> = wait.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(clients, first, "{stdout}");
    for row in &wait {
        let ms = |i: usize| row[i].parse::<f64>().is_ok_and(|ms| ms > 0.0);
        if row[1] == "ours" {
            assert!((2..6).all(ms), "{row:?}\n{stdout}");
        } else {
            assert!(ms(2) && row[3] == "-" && row[4] == "-" && ms(5), "{row:?}\n{stdout}");
        }
    }
    let summary: Vec<&str> = stdout.lines().filter(|l| l.starts_with("browser, ")).collect();
    assert_eq!(summary.len(), 6, "{stdout}");
    assert!(summary.iter().all(|l| l.ends_with(": met") || l.ends_with(": not met")), "{stdout}");
}
