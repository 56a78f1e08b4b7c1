//! The route table (`services/src/router.rs`) against the spec and the whole stack: every route
//! is documented and every documented operation is routed; each route answers its own method,
//! and any other with 405 whose `Allow` lists exactly the table's methods for that template.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kalamdb_server::Config;
use kalamdb_services::{route_name, ROUTES};
use kalamdb_tests::{call, TestStore};
use serde_json::Value;

/// (method, template) pairs, as the table and as the spec list them.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_yaml_ng::from_str(include_str!("../../docs/openapi.yaml")).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(template, operations)| {
            operations
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), template.clone()))
        })
        .collect()
}

/// A path that matches `template`, each parameter filled in.
fn path_of(template: &str) -> String {
    template
        .replace("{msg_id}", "1")
        .replace("{conversation_id}", "conv")
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, template)| (method.to_string(), (*template).to_owned()))
        .collect();
    assert_eq!(routed, documented());
    for (_, template) in ROUTES {
        assert_eq!(route_name(&path_of(template)), *template);
    }
}

#[tokio::test]
async fn each_route_answers_its_method_and_refuses_others_with_its_allow_list() {
    let store = TestStore::new(Config::default());
    // An open stream never ends by itself: with streams ended, the stream endpoint answers at
    // once (503), which still shows the request reached it.
    store.handle.end_streams();
    let app = store.app();
    for (_, template) in ROUTES {
        let allowed: BTreeSet<String> = ROUTES
            .iter()
            .filter(|(_, t)| t == template)
            .map(|(m, _)| m.to_string())
            .collect();
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri(path_of(template))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let answer = call(&app, request).await;
            if allowed.contains(method.as_str()) {
                // Routed to the endpoint, whatever it makes of an empty body or id 1.
                assert_ne!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template}"
                );
                if answer.status == StatusCode::NOT_FOUND {
                    assert_ne!(
                        answer.error_message(),
                        format!("no such path: {}", path_of(template))
                    );
                }
                continue;
            }
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template}"
            );
            let allow: BTreeSet<String> = answer.headers["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, allowed, "{method} {template}");
        }
    }
}
