//! `--auth`: with the server's `[auth]` on, every request the load sends carries credentials the
//! server accepts, so the figures are of authenticated requests, not of 401s.

mod common;

#[test]
fn with_a_service_key_or_a_user_token_every_request_is_answered() {
    for mode in ["service", "user"] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("results.json");
        let output = common::bench(&[
            "--suite",
            "quick",
            "--duration-secs",
            "1",
            "--rounds",
            "1",
            "--auth",
            mode,
            "--json",
            json.to_str().unwrap(),
        ]);
        let report = common::report(&output, &json);
        assert_eq!(report["auth"], mode);
        let scenarios = report["scenarios"].as_array().unwrap();
        assert_eq!(scenarios.len(), 2, "{report}");
        for scenario in scenarios {
            let server = &scenario["server"];
            // A refused request (401, or 404 for a user who is not a member) counts as an error.
            assert_eq!(server["errors"], 0, "{mode}: {scenario}");
            assert!(server["ok"].as_u64().unwrap() > 10, "{mode}: {scenario}");
        }
        // The query was answered with the real page, not an error body.
        let query = &scenarios[1];
        assert!(query["reply_bytes"].as_u64().unwrap() > 10_000, "{query}");
    }
}

#[test]
fn auth_and_the_stream_mode_do_not_mix() {
    let output = common::bench(&["--auth", "user", "--stream", "1", "--only", "nothing"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--auth"), "{stderr}");
}
