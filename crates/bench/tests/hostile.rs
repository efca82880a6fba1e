//! `gotalk-bench --scenario hostile` at a tiny scale, through the real binary: every attack
//! still runs against a real `gotalk serve` (the fixture operations behind it), the server survives each, the bystander beside
//! it is answered every time, and the table has a row per attack.

mod common;

/// The attacks, as the table names them.
const ATTACKS: [&str; 8] =
    ["json", "held", "results", "streams", "partial", "ws-buffers", "broadcast", "exhaust"];

#[test]
fn every_hostile_attack_runs_and_the_server_survives_it_at_a_tiny_scale() {
    let stdout = common::run(
        ["--scenario", "hostile", "--hostile-scale", "0.01"].into_iter().chain([
            "--hostile-hold",
            "1",
            "--hostile-after",
            "1",
            "--exhaust-per-addr",
            "3",
        ]),
        &[],
    );

    // | # | attack | before | during | peak | allowed | after | back | answered/failed | p99 |
    // server | budget peak |
    let rows = common::rows(&stdout, &["#"]);
    let names: Vec<&str> = rows.iter().map(|row| row[1]).collect();
    assert_eq!(names, ATTACKS, "{stdout}");
    for row in &rows {
        assert_eq!(row[10], "alive", "{row:?}\n{stdout}");
        let (answered, failed) = row[8].split_once('/').expect("answered/failed");
        assert!(answered.parse::<u32>().unwrap() > 0, "{row:?}");
        assert_eq!(failed, "0", "the bystander failed: {row:?}\n{stdout}");
        // Every number was read: the server's RSS before, at its peak and after.
        for column in [2, 4, 6] {
            assert!(row[column].parse::<f64>().is_ok_and(|mib| mib > 0.0), "{row:?}");
        }
    }
    // The attacks that send held bytes are charged to the server's memory budget.
    for row in &rows[..5] {
        assert!(row[11].parse::<f64>().is_ok_and(|mib| mib > 0.0), "{row:?}\n{stdout}");
    }
    assert!(stdout.contains("server alive to the end: 8 of 8: met"), "{stdout}");
}
