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
    let visits = ["cold", "warm", "hot"];
    let first: Vec<(&str, &str)> =
        rows.iter().filter(|r| visits.contains(&r[0])).map(|r| (r[0], r[1])).collect();
    let want: Vec<(&str, &str)> =
        visits.iter().flat_map(|&v| [(v, "ours"), (v, "gotalk.js 1.2.1")]).collect();
    assert_eq!(first, want, "{stdout}");
    for row in rows.iter().filter(|r| visits.contains(&r[0])) {
        assert!(row[2].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row:?}\n{stdout}");
        assert!(row[5].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row:?}\n{stdout}");
    }
    // | visit | client | script arrived (from navigation) | script run | socket open |
    // wasm arrived | client ready | answer | answer (from navigation) |: every moment for ours,
    // and for gotalk.js, which has no wasm, all but the wasm's two; then per visit the
    // differences, signed, where both clients have the moment.
    let wait = common::rows(wait, &["visit"]);
    let clients: Vec<(&str, &str)> = wait.iter().map(|r| (r[0], r[1])).collect();
    let want: Vec<(&str, &str)> = visits
        .iter()
        .flat_map(|&v| [(v, "ours"), (v, "gotalk.js 1.2.1"), (v, "ours − gotalk.js, per load")])
        .collect();
    assert_eq!(clients, want, "{stdout}");
    for row in &wait {
        assert_eq!(row.len(), 9, "{row:?}\n{stdout}");
        let ms = |i: usize| row[i].parse::<f64>().is_ok_and(|ms| ms > 0.0);
        let signed =
            |i: usize| row[i].starts_with(['+', '-']) && row[i][1..].parse::<f64>().is_ok();
        let wasm = [5, 6];
        match row[1] {
            "ours" => assert!((2..9).all(ms), "{row:?}\n{stdout}"),
            "gotalk.js 1.2.1" => assert!(
                (2..9).all(|i| if wasm.contains(&i) { row[i] == "-" } else { ms(i) }),
                "{row:?}\n{stdout}"
            ),
            _ => assert!(
                (2..9).all(|i| if wasm.contains(&i) { row[i] == "-" } else { signed(i) }),
                "{row:?}\n{stdout}"
            ),
        }
    }
    let summary: Vec<&str> = stdout.lines().filter(|l| l.starts_with("browser, ")).collect();
    assert_eq!(summary.len(), 7, "{stdout}");
    let verdict = |l: &&str| {
        l.ends_with(": met")
            || l.ends_with(": not met")
            || l.ends_with(": level (not met, but the interval reaches below zero)")
    };
    assert!(summary.iter().all(verdict), "{stdout}");
}
