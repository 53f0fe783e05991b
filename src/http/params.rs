//! Text inputs whose rules the spec declares (a pattern, a length, a set of values) while the
//! handler checks them, so that a violation is answered with the operation's own error code
//! (`invalid_notion_id`, `invalid_email`, `invalid_filter`, ...) rather than poem's generic one.
//! Each type's schema states exactly the rule its check applies: a client (or a fuzzer) that
//! follows the spec is never refused, and one that does not is always refused.
//!
//! They accept only JSON strings (poem's `String` also takes numbers and booleans).

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::ids::NotionId;

macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                "string".into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value {
                    Some(Value::String(text)) => Ok(Self(text)),
                    Some(other) => Err(ParseError::expected_type(other)),
                    None => Err(ParseError::expected_input()),
                }
            }
        }

        impl ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok(Self(value.to_owned()))
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

/// A Notion id: 32 hex digits, with or without the dashes of 8-4-4-4-12.
pub const NOTION_ID_PATTERN: &str =
    "^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";

/// Characters an email address may not contain besides `@`: whitespace and control characters.
const NOT_IN_EMAIL: &str = r"@\s\x00-\x1f\x7f-\x9f";
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_TOKEN_CHARS: usize = 2048;

checked_text!(
    /// A Notion page / database id as sent (checked by [`NotionIdText::parse`]).
    NotionIdText,
    MetaSchema { pattern: Some(NOTION_ID_PATTERN.to_owned()), ..MetaSchema::new("string") }
);

impl NotionIdText {
    /// The canonical id, or why the text is not one (nothing around the id is tolerated, as
    /// the pattern says).
    pub fn parse(&self) -> Result<NotionId, crate::ids::InvalidNotionId> {
        if self.0.trim() != self.0 {
            return Err(crate::ids::InvalidNotionId(self.0.clone()));
        }
        NotionId::parse(&self.0)
    }
}

checked_text!(
    /// An email address: one `@` between two non-empty parts, no whitespace or control
    /// characters, at most 254 characters.
    EmailText,
    MetaSchema {
        pattern: Some(format!("^[^{NOT_IN_EMAIL}]+@[^{NOT_IN_EMAIL}]+$")),
        max_length: Some(MAX_EMAIL_CHARS),
        ..MetaSchema::new("string")
    }
);

impl EmailText {
    pub fn is_valid(&self) -> bool {
        // `\s` in the published (ECMAScript) pattern also covers U+FEFF, which Rust's
        // `is_whitespace` does not.
        let excluded = |c: char| c == '@' || c.is_whitespace() || c.is_control() || c == '\u{feff}';
        let Some((local, domain)) = self.0.split_once('@') else { return false };
        self.0.chars().count() <= MAX_EMAIL_CHARS
            && !local.is_empty()
            && !domain.is_empty()
            && !local.chars().any(excluded)
            && !domain.chars().any(excluded)
    }
}

checked_text!(
    /// A Notion token (internal integration or OAuth): 1 to 2048 printable ASCII characters,
    /// no spaces.
    TokenText,
    MetaSchema { pattern: Some(format!("^[!-~]{{1,{MAX_TOKEN_CHARS}}}$")), ..MetaSchema::new("string") }
);

impl TokenText {
    pub fn is_valid(&self) -> bool {
        (1..=MAX_TOKEN_CHARS).contains(&self.0.len()) && self.0.bytes().all(|b| b.is_ascii_graphic())
    }
}

/// A filter value that must be one of `values`.
fn one_of(values: &[&str]) -> MetaSchema {
    MetaSchema { enum_items: values.iter().map(|v| Value::from(*v)).collect(), ..MetaSchema::new("string") }
}

pub const RUN_STATES: &[&str] = &["pending", "running", "waiting", "succeeded", "failed", "cancelled"];
pub const WORKFLOWS: &[&str] = &["notion_event", "notion_sync"];
pub const STEPS: &[&str] = &["discover_users", "debounce", "fetch", "generate", "persist"];

checked_text!(
    /// A run state filter.
    RunStateText,
    one_of(RUN_STATES)
);
checked_text!(
    /// A workflow filter.
    WorkflowText,
    one_of(WORKFLOWS)
);
checked_text!(
    /// A step filter.
    StepText,
    one_of(STEPS)
);
checked_text!(
    /// A step filter in a JSON body, where null means "any step" (OpenAPI 3.0 wants the null
    /// of a nullable enum listed among its values).
    NullableStepText,
    {
        let mut schema = one_of(STEPS);
        schema.enum_items.push(Value::Null);
        schema.nullable = true;
        schema
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_follow_the_declared_rule() {
        for ok in ["maya@example.com", "a@b", "ä@例え.jp", "x+tag@sub.example.org"] {
            assert!(EmailText(ok.into()).is_valid(), "{ok}");
        }
        for bad in [
            "",
            "maya",
            "@example.com",
            "maya@",
            "a@b@c",
            " maya@example.com",
            "ma ya@x",
            "a\u{1f}@b",
            "a\u{feff}b@x.io",
        ] {
            assert!(!EmailText(bad.into()).is_valid(), "{bad:?}");
        }
        assert!(!EmailText(format!("{}@b", "a".repeat(253))).is_valid());
    }

    #[test]
    fn tokens_and_ids_follow_the_declared_rule() {
        assert!(TokenText("ntn_abc123".into()).is_valid());
        assert!(!TokenText("".into()).is_valid());
        assert!(!TokenText("a b".into()).is_valid());
        assert!(!TokenText("é".into()).is_valid());
        assert!(!TokenText("a".repeat(2049)).is_valid());
        assert!(NotionIdText("1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1".into()).parse().is_ok());
        assert!(NotionIdText("1F3C8A2E-4B7D-80A1-9C5E-D2F4A6B8C0E1".into()).parse().is_ok());
        assert!(NotionIdText(" 1f3c8a2e4b7d80a19c5ed2f4a6b8c0e1".into()).parse().is_err());
        assert!(NotionIdText("0".into()).parse().is_err());
    }
}
