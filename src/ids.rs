//! Identifiers, parsed once at the boundary so the core never handles bare strings.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A Notion object id (page, database, data source, block) in its canonical form: lowercase,
/// dashed 8-4-4-4-12. Notion accepts ids with or without dashes; we store one form only, so
/// that a subscription made with one spelling matches events that use the other.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NotionId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a Notion id (32 hexadecimal digits, with or without dashes)")]
pub struct InvalidNotionId(pub String);

impl NotionId {
    pub fn parse(raw: &str) -> Result<Self, InvalidNotionId> {
        let trimmed = raw.trim();
        let hex: String = trimmed.chars().filter(|c| *c != '-').collect();
        let dashes_ok = !trimmed.contains('-') || is_dashed_uuid_shape(trimmed);
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || !dashes_ok {
            return Err(InvalidNotionId(raw.to_owned()));
        }
        let hex = hex.to_ascii_lowercase();
        Ok(Self(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_dashed_uuid_shape(s: &str) -> bool {
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12]
}

impl FromStr for NotionId {
    type Err = InvalidNotionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for NotionId {
    type Error = InvalidNotionId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<NotionId> for String {
    fn from(id: NotionId) -> Self {
        id.0
    }
}

impl fmt::Display for NotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NotionId({})", self.0)
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7), so ids sort roughly by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A workflow run.
    RunId
);
uuid_id!(
    /// A stored webhook event (ours, not Notion's event id).
    EventId
);
uuid_id!(
    /// A Cognie user.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notion_ids_with_and_without_dashes_are_one_id() {
        let dashed = NotionId::parse("1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1").unwrap();
        let bare = NotionId::parse("1F3C8A2E4B7D80A19C5ED2F4A6B8C0E1").unwrap();
        assert_eq!(dashed, bare);
        assert_eq!(bare.as_str(), "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1");
    }

    #[test]
    fn malformed_notion_ids_are_rejected() {
        for bad in [
            "",
            "test",
            "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e",
            "1f3c8a2e4b7d-80a1-9c5e-d2f4a6b8c0e1x",
            "1f3c8a2e-4b7d-80a1-9c5ed2f4-a6b8c0e1",
            "zz3c8a2e4b7d80a19c5ed2f4a6b8c0e1",
        ] {
            assert!(NotionId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
