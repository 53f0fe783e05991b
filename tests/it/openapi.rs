//! The checked-in spec is what the code generates.

#[test]
fn the_checked_in_spec_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = format!("{}\n", cognie_sync::http::spec_json());
    assert!(
        checked_in == generated,
        "openapi/openapi.json is out of date with the code: run `just openapi` (or \
         `cargo run -- openapi --output openapi/openapi.json`) and commit the result"
    );
}

#[test]
fn every_operation_has_an_id_a_tag_and_a_description() {
    let spec: serde_json::Value =
        serde_json::from_str(&cognie_sync::http::spec_json()).expect("spec is JSON");
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            assert!(op["operationId"].as_str().is_some_and(|s| !s.is_empty()), "{name}: no operationId");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{name}: no tag");
            assert!(
                op["summary"].as_str().or(op["description"].as_str()).is_some_and(|s| !s.is_empty()),
                "{name}: no description"
            );
        }
    }
}
