//! `gotalk-bench cluster` at a tiny size, through the real binary, real `gotalk serve`
//! instances and real `redis-server` and `nats-server`: every row of the three tables is
//! filled with figures. Speed is the benchmark's business, not this test's: it only checks
//! the benchmark still runs.

mod common;

#[test]
fn the_cluster_benchmark_fills_every_table_at_a_tiny_size() {
    if gotalk_tests::servers::skip_cluster_tests() {
        return;
    }
    let stdout = common::run(
        ["cluster", "--runs", "1", "--secs", "0.2", "--warmup", "0.05"].into_iter().chain([
            "--members",
            "30",
            "--publishes",
            "3",
            "--idle",
            "50",
        ]),
        &[],
    );
    let rows = common::rows(&stdout, &["bus"]);
    let number = |cell: &str| cell.split(' ').next().is_some_and(|n| n.parse::<f64>().is_ok());
    let positive = |cell: &str| {
        cell.split(' ').next().and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0)
    };

    // | bus | peers | conns × depth | msgs/s | min – max | ack p50 | ack p99 | delivery p50 | p99 |
    let relay: Vec<(&str, &str, &str)> =
        rows.iter().filter(|r| r.len() == 9).map(|r| (r[0], r[1], r[2])).collect();
    let mut want = Vec::new();
    for shape in ["1 × 1", "16 × 16"] {
        want.push(("local", "local", shape));
        for bus in ["redis", "nats"] {
            want.push((bus, "same", shape));
            want.push((bus, "cross", shape));
        }
    }
    assert_eq!(relay, want, "{stdout}");
    for row in rows.iter().filter(|r| r.len() == 9) {
        for cell in [row[3], row[5], row[6], row[7], row[8]] {
            assert!(positive(cell), "{row:?}\n{stdout}");
        }
    }

    // | bus | members × instances | p50 | p99 | publishes/s | min – max | deliveries/s | bus |
    let fanout: Vec<(&str, &str)> =
        rows.iter().filter(|r| r.len() == 8).map(|r| (r[0], r[1])).collect();
    assert_eq!(fanout, [("local", "30 × 1"), ("redis", "30 × 3"), ("nats", "30 × 3")], "{stdout}");
    for row in rows.iter().filter(|r| r.len() == 8) {
        for cell in [row[2], row[3], row[4], row[6]] {
            assert!(positive(cell), "{row:?}\n{stdout}");
        }
        // The buses count what they carried; one process has no bus to count.
        let (into, out) = row[7].split_once(" / ").expect("in / out");
        assert_eq!(row[0] != "local", number(into), "{row:?}\n{stdout}");
        assert_eq!(row[0] == "nats", number(out), "{row:?}\n{stdout}");
    }

    // | bus | connections | instance bytes/conn | min – max | bus bytes/conn | min – max |
    let memory: Vec<(&str, &str)> =
        rows.iter().filter(|r| r.len() == 6).map(|r| (r[0], r[1])).collect();
    assert_eq!(memory, [("none", "50"), ("redis", "50"), ("nats", "50")], "{stdout}");
    for row in rows.iter().filter(|r| r.len() == 6) {
        assert!(number(row[2]), "{row:?}\n{stdout}");
        assert_eq!(row[0] != "none", number(row[4]), "{row:?}\n{stdout}");
    }
}
