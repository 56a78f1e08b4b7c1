//! The benchmark runs end to end and reports sane figures. No timing is asserted: speed is
//! measured by running the benchmark, not by the test suite.

mod common;

#[test]
fn a_one_second_quick_run_reports_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let output = common::bench(&[
        "--suite",
        "quick",
        "--duration-secs",
        "1",
        "--rounds",
        "1",
        "--stream",
        "3",
        "--stream-events",
        "20",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report = common::report(&output, &json);
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2);
    for scenario in scenarios {
        for side in ["server", "noop"] {
            let measured = &scenario[side];
            assert!(measured["ok"].as_u64().unwrap() > 0, "{scenario}");
            assert_eq!(measured["errors"], 0, "{scenario}");
            let p50 = measured["p50_us"].as_u64().unwrap();
            let p99 = measured["p99_us"].as_u64().unwrap();
            assert!(p50 > 0 && p50 <= p99, "{scenario}");
        }
        let ratio = scenario["throughput_ratio"].as_f64().unwrap();
        assert!(ratio > 0.0);
        // One round: its own ratio is the scenario's.
        assert_eq!(
            scenario["round_ratios"],
            serde_json::json!([ratio]),
            "{scenario}"
        );
        assert!(scenario["server_peak_rss_bytes"].as_u64().unwrap() > 1_000_000);
        // Both servers were started here, so their CPU per request is known.
        for side in ["server", "noop"] {
            let cpu = scenario[side]["cpu_us_per_request"].as_f64();
            assert!(cpu.is_some_and(|us| us >= 0.0), "{scenario}");
        }
        // A query is also measured against a no-op sending a reply as large as the page.
        if scenario["scenario"]["workload"] == "query" {
            let bytes = scenario["reply_bytes"].as_u64().unwrap();
            assert!(bytes > 10_000, "50 messages of 200 bytes: {scenario}");
            assert!(
                scenario["sized_noop"]["ok"].as_u64().unwrap() > 0,
                "{scenario}"
            );
            assert!(
                scenario["sized_ratio"].as_f64().unwrap() > 0.0,
                "{scenario}"
            );
        } else {
            assert!(scenario["sized_noop"].is_null(), "{scenario}");
        }
    }
    assert!(report["fdatasync_p50_us"].as_u64().is_some(), "{report}");
    // The stream mode: every subscriber heard every insert, and the figures are ordered.
    let stream = &report["stream"][0];
    assert_eq!(stream["subscribers"], 3, "{stream}");
    assert_eq!(stream["incomplete"], 0, "{stream}");
    let p50 = stream["p50_us"].as_u64().unwrap();
    let p99 = stream["p99_us"].as_u64().unwrap();
    assert!(
        p50 > 0 && p50 <= p99 && p99 <= stream["max_us"].as_u64().unwrap(),
        "{stream}"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("ratio"), "{text}");
    assert!(text.contains("(rounds "), "{text}");
    assert!(text.contains("insert -> event"), "{text}");
    assert!(text.contains("-byte reply"), "{text}");
    assert!(text.contains("disk: fdatasync p50"), "{text}");
}
