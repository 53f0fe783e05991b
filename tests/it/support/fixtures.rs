//! The Notion fixtures (copied from the product's reference set), read byte for byte: the
//! stored signatures cover the exact file bytes.

use std::{collections::BTreeMap, path::PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/notion")
}

pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `webhook_signatures.json`: the signing token and each fixture's `X-Notion-Signature`.
pub struct Signatures {
    pub verification_token: String,
    pub by_file: BTreeMap<String, String>,
}

pub fn signatures() -> Signatures {
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes("webhook_signatures.json")).expect("signatures json");
    Signatures {
        verification_token: doc["verification_token"].as_str().expect("token").to_owned(),
        by_file: doc["signatures"]
            .as_object()
            .expect("signatures map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("signature").to_owned()))
            .collect(),
    }
}

/// The signing token of the fixtures.
pub fn secret() -> String {
    signatures().verification_token
}
