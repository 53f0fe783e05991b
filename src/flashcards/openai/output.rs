//! The model's answer checked and turned into cards.

use std::collections::HashSet;

use serde_json::Value;

use super::{
    super::{Card, GenerateError},
    prompt::SourceIndex,
};

/// Parses the assistant message `{"cards": [{"front", "back", "source_block_id"}]}` (a
/// surrounding Markdown code fence is tolerated). Invalid, and so retryable: not JSON, no
/// `cards` array, a card whose front or back is missing or blank, a card citing an id that is
/// not in the content. A second card citing the same source is dropped (a card's identity is its
/// source). Cards are returned in the document order of their sources.
pub(super) fn parse_cards(answer: &str, index: &SourceIndex) -> Result<Vec<Card>, GenerateError> {
    let doc: Value = serde_json::from_str(strip_fence(answer))
        .map_err(|e| invalid(format!("the answer is not JSON ({e})")))?;
    let items = doc
        .get("cards")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the answer is not an object with a `cards` array".to_owned()))?;
    let mut cards = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for (n, item) in items.iter().enumerate().map(|(i, item)| (i + 1, item)) {
        let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::trim).unwrap_or_default();
        let (front, back, cited) = (field("front"), field("back"), field("source_block_id"));
        if front.is_empty() || back.is_empty() {
            return Err(invalid(format!("card {n} has an empty or missing `front` or `back`")));
        }
        let source = index.resolve(cited).ok_or_else(|| {
            invalid(format!("card {n} cites `{}`, which is not a block of the content", shorten(cited)))
        })?;
        if !seen.insert(source.position) {
            duplicates += 1;
            continue;
        }
        cards.push((
            source.position,
            Card {
                source_page_id: source.page_id.clone(),
                source_block_id: source.id.clone(),
                source: source.kind,
                front: front.to_owned(),
                back: back.to_owned(),
            },
        ));
    }
    if duplicates > 0 {
        tracing::warn!(duplicates, "the model made more than one card from a block; kept the first of each");
    }
    cards.sort_by_key(|(position, _)| *position);
    Ok(cards.into_iter().map(|(_, card)| card).collect())
}

fn invalid(reason: String) -> GenerateError {
    GenerateError::InvalidOutput(reason)
}

/// The JSON inside a ```` ```json … ``` ```` fence, or the whole answer.
fn strip_fence(answer: &str) -> &str {
    let trimmed = answer.trim();
    let Some(rest) = trimmed.strip_prefix("```") else { return trimmed };
    let Some(body) = rest.strip_suffix("```") else { return trimmed };
    body.split_once('\n').map_or(body, |(_language, json)| json).trim()
}

/// At most 80 characters of model output, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
