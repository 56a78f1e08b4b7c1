//! `docs/openapi.yaml`'s rules for inputs are the server's own: an id the spec's pattern admits
//! is one the server parses, and a name it admits is one validation accepts. `openapi.rs` holds
//! the answers to the spec; this file holds the requests. `scripts/contract.sh` checks both
//! again from outside, with schemathesis.

use kalamdb_core::message::validate_name;
use kalamdb_core::MessageId;
use proptest::prelude::*;
use serde_json::{json, Value};

/// A validator for the spec's `components/schemas/<name>`.
fn schema(name: &str) -> jsonschema::Validator {
    let doc: Value = serde_yaml_ng::from_str(include_str!("../../docs/openapi.yaml"))
        .expect("docs/openapi.yaml is YAML");
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "$ref": format!("#/components/schemas/{name}"),
    });
    jsonschema::draft202012::new(&root).expect("a valid schema")
}

/// Digit strings around the edges of a u64: short ones, 19 and 20 digits near 2^64, longer
/// ones, with and without leading zeros.
fn digits() -> impl Strategy<Value = String> {
    let near_max =
        (0u64..100_000).prop_map(|d| (u128::from(u64::MAX) + 50_000 - u128::from(d)).to_string());
    let any_u64 = any::<u64>().prop_map(|n| n.to_string());
    let long = "[0-9]{1,30}";
    (
        prop_oneof![near_max, any_u64, long.prop_map(String::from)],
        0usize..3,
    )
        .prop_map(|(digits, zeros)| format!("{}{digits}", "0".repeat(zeros)))
}

proptest! {
    #[test]
    fn the_spec_admits_exactly_the_ids_the_server_parses(text in digits()) {
        let admitted = schema("MsgIdText").is_valid(&json!(text));
        let parsed = text.parse::<MessageId>().is_ok();
        prop_assert_eq!(admitted, parsed, "{}", text);
    }

    #[test]
    fn the_spec_admits_exactly_the_ascii_names_validation_accepts(name in "[\\x00-\\x7f\u{80}-\u{a0}]{0,260}") {
        // A name of at most 255 characters but more than 255 bytes is the one gap: JSON Schema
        // counts characters, and the spec says bytes in words (scripts/contract_hooks.py skips
        // such names). Everything else, control characters (C0 and C1) and both ends of the
        // length included, must agree.
        prop_assume!(name.chars().count() == name.len() || name.len() <= 255);
        let admitted = schema("Name").is_valid(&json!(name));
        let accepted = validate_name("conversation_id", &name).is_ok();
        prop_assert_eq!(admitted, accepted, "{:?}", name);
    }
}

#[test]
fn edges_of_the_id_rule() {
    let ids = schema("MsgIdText");
    for admitted in [
        "0",
        "000",
        "18446744073709551615",
        "0018446744073709551615",
        "9",
    ] {
        assert!(ids.is_valid(&json!(admitted)), "{admitted}");
        assert!(admitted.parse::<MessageId>().is_ok(), "{admitted}");
    }
    for refused in [
        "",
        "18446744073709551616",
        "99999999999999999999",
        "1a",
        "+1",
        " 1",
    ] {
        assert!(!ids.is_valid(&json!(refused)), "{refused:?}");
        assert!(refused.parse::<MessageId>().is_err(), "{refused:?}");
    }
}
