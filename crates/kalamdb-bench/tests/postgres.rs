//! `--postgres-servers`: the PostgreSQL mode runs the real server on a database it starts on
//! loopback, spreads the load over every server, and measures raw PostgreSQL beside it; every
//! request of both is answered.

mod common;

#[test]
fn every_request_to_the_servers_and_to_raw_postgresql_is_answered() {
    for scenario in ["insert, 1 connection", "query-50, 16 connections"] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("results.json");
        let output = common::bench(&[
            "--postgres-servers",
            "1,2",
            "--only",
            scenario,
            "--duration-secs",
            "1",
            "--json",
            json.to_str().unwrap(),
        ]);
        let results = common::report(&output, &json);
        let results = results.as_array().unwrap();
        let servers: Vec<u64> = results
            .iter()
            .map(|r| r["servers"].as_u64().unwrap())
            .collect();
        assert_eq!(servers, [1, 2], "{results:?}");
        for result in results {
            assert_eq!(result["scenario"]["name"], scenario);
            for side in ["kalamdb", "raw_postgres"] {
                assert_eq!(result[side]["errors"], 0, "{side}: {result}");
                assert!(result[side]["ok"].as_u64().unwrap() > 0, "{side}: {result}");
            }
        }
    }
}
