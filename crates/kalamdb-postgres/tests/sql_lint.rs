//! The store's SQL stays inside what PostgreSQL, Citus, CockroachDB and YugabyteDB all run
//! (`../shared/DESIGN.md` §7): every statement and every DDL is held to a list of constructs
//! that at least one of them lacks or runs differently, and no statement hides outside
//! `src/sql.rs`, where the list cannot see it (but the `postgres` live bus's, in `src/bus.rs`,
//! which is PostgreSQL's own by design).

use kalamdb_postgres::sql::{Sql, BOOTSTRAP, MIGRATIONS, SCHEMA_VERSION};

/// Each forbidden construct (upper case, matched on word boundaries) and why.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "LISTEN",
        "CockroachDB has no LISTEN; the live bus is not the store",
    ),
    (
        "NOTIFY",
        "NOTIFY inside a store transaction; the bus publishes after commit",
    ),
    ("PG_NOTIFY", "PostgreSQL-only function"),
    (
        "SEQUENCE",
        "ids are Snowflakes minted under the head row's lock, never sequences",
    ),
    ("NEXTVAL", "sequences"),
    (
        "SERIAL",
        "PostgreSQL-only type; CockroachDB's is a different thing",
    ),
    ("BIGSERIAL", "PostgreSQL-only type"),
    (
        "JSONB",
        "stored JSON is bytes the store hands back as they are",
    ),
    (
        "JSON",
        "stored JSON is bytes the store hands back as they are",
    ),
    ("ARRAY", "arrays differ between the engines"),
    ("UNNEST", "arrays differ between the engines"),
    ("ANY", "arrays differ between the engines"),
    (
        "NOW",
        "PostgreSQL's function; CURRENT_TIMESTAMP is standard",
    ),
    ("GREATEST", "not standard SQL"),
    ("LEAST", "not standard SQL"),
    ("ILIKE", "PostgreSQL-only operator"),
    ("SKIP", "SKIP LOCKED is not in every engine"),
    ("NOWAIT", "lock options differ"),
    ("ADVISORY", "advisory locks are PostgreSQL-only"),
    (
        "PG_ADVISORY_XACT_LOCK",
        "advisory locks are PostgreSQL-only",
    ),
    ("DISTINCT", "DISTINCT ON is PostgreSQL-only"),
    ("TEMPORARY", "temporary tables do not distribute"),
    ("UNLOGGED", "PostgreSQL-only storage option"),
    ("VACUUM", "maintenance is the operator's, per engine"),
    ("TRIGGER", "triggers differ between the engines"),
    ("FUNCTION", "stored functions differ between the engines"),
];

fn words(statement: &str) -> Vec<String> {
    statement
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect()
}

#[test]
fn every_statement_is_in_the_common_subset() {
    let sql = Sql::new("kalamdb");
    let all = sql.all();
    assert!(
        all.len() > 40,
        "the lint sees every statement: {}",
        all.len()
    );
    let mut problems = Vec::new();
    for statement in &all {
        let words = words(statement);
        for (construct, why) in FORBIDDEN {
            if words.iter().any(|w| w == construct) {
                problems.push(format!("{construct} ({why}) in: {statement}"));
            }
        }
        if statement.contains("::") {
            problems.push(format!(
                ":: casts are PostgreSQL's; CAST(x AS t) is standard: {statement}"
            ));
        }
        if statement.contains('{') && !statement.contains("'{}'") {
            problems.push(format!("a placeholder left unfilled: {statement}"));
        }
        if statement.contains(';') {
            problems.push(format!("one statement per string: {statement}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_lint_catches_what_it_forbids() {
    for bad in [
        "SELECT nextval('ids')",
        "SELECT now()",
        "SELECT x::BIGINT FROM t",
        "CREATE TABLE t (id BIGSERIAL)",
        "SELECT * FROM t FOR UPDATE SKIP LOCKED",
        "SELECT pg_notify('c', 'x')",
    ] {
        let words = words(bad);
        let caught = bad.contains("::")
            || FORBIDDEN
                .iter()
                .any(|(construct, _)| words.iter().any(|w| w == construct));
        assert!(caught, "{bad}");
    }
}

#[test]
fn every_version_has_its_migration() {
    assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    assert!(
        BOOTSTRAP
            .iter()
            .all(|ddl| ddl.contains("IF NOT EXISTS") || ddl.contains("ON CONFLICT")),
        "the bootstrap runs on every start: each step must be harmless the second time"
    );
}

#[test]
fn no_statement_lives_outside_sql_rs() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        // The bus's LISTEN and pg_notify are PostgreSQL's own, and not the store's: a
        // CockroachDB deployment runs the store with the NATS bus.
        if path
            .file_name()
            .is_some_and(|n| n == "sql.rs" || n == "bus.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            for verb in [
                "\"SELECT ",
                "\"INSERT ",
                "\"UPDATE ",
                "\"DELETE ",
                "\"CREATE ",
                "\"ALTER ",
                "\"DROP ",
            ] {
                if line.to_ascii_uppercase().contains(verb) {
                    found.push(format!(
                        "{}:{}: {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/sql.rs, where the lint cannot see it:\n{}",
        found.join("\n")
    );
}
