//! The built-in, offline, deterministic generator: the convention of Notion-to-Anki tools
//! (2anki, notion-anki-sync).
//!
//! - A `toggle`, or a heading with `is_toggleable: true`, anywhere in a page (also inside lists,
//!   callouts, columns and other toggles) is a card: front = its rich text, back = its children
//!   rendered as text ([`super::render`]).
//! - A toggle inside another card's answer is its own card too, and its text and children are
//!   also part of the outer card's back (2anki's default `all`).
//! - Inline `code` in a front becomes a cloze deletion, `{{c1::…}}`, numbered in order; code in a
//!   back stays plain text.
//! - A data-source row (its `parent.type` is `data_source_id` or `database_id`) is a card of its
//!   own, front = the title property, back = the other properties as `Name: value` lines, when
//!   its body holds no card blocks. A row whose body has toggles is a page of notes: its toggles
//!   are its cards, and its properties (tags, status…) are metadata, not an answer. So a row
//!   gains or loses its row card when its first toggle is added or its last removed.
//! - A card with no text on the front or on the back is skipped (a toggle being written).
//! - `child_page` / `child_database` content belongs to other pages and is never read; pages
//!   marked `gone` give no cards.
//!
//! Cards come out in document order: pages in order; within a page the row card, then block
//! cards depth first.

use serde_json::Value;

use super::{
    Card, CardSource, Content, ContentPage, GenerateError,
    content::{block_id, children, is_card_block, rich_text, walk},
    properties::row_back,
    render::{cloze_text, render_blocks},
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulesGenerator;

impl RulesGenerator {
    /// The cards of `content`, in document order. Fails only on content without ids.
    pub fn generate(&self, content: &Content) -> Result<Vec<Card>, GenerateError> {
        let mut cards = Vec::new();
        for page in content.pages.iter().filter(|page| !page.gone) {
            let page_id = page
                .page_id()
                .ok_or_else(|| GenerateError::InvalidContent("a page object has no `id`".into()))?;
            let block_cards = block_cards(page_id, &page.blocks)?;
            if page.is_row() && block_cards.is_empty() {
                cards.extend(row_card(page_id, page));
            }
            cards.extend(block_cards);
        }
        Ok(cards)
    }
}

fn block_cards(page_id: &str, blocks: &[Value]) -> Result<Vec<Card>, GenerateError> {
    let mut cards = Vec::new();
    let mut missing_id = false;
    walk(blocks, &mut |block| {
        if !is_card_block(block) {
            return;
        }
        let Some(id) = block_id(block) else {
            missing_id = true;
            return;
        };
        let front = tidy(&cloze_text(rich_text(block)));
        let back = render_blocks(children(block));
        if !front.is_empty() && !back.is_empty() {
            cards.push(Card {
                source_page_id: page_id.to_owned(),
                source_block_id: id.to_owned(),
                source: CardSource::Block,
                front,
                back,
            });
        }
    });
    if missing_id {
        return Err(GenerateError::InvalidContent(format!("a toggle in page {page_id} has no `id`")));
    }
    Ok(cards)
}

fn row_card(page_id: &str, page: &ContentPage) -> Option<Card> {
    let front = tidy(&cloze_text(page.title()));
    let back = row_back(page);
    (!front.is_empty() && !back.is_empty()).then(|| Card {
        source_page_id: page_id.to_owned(),
        source_block_id: page_id.to_owned(),
        source: CardSource::Row,
        front,
        back,
    })
}

/// Trailing whitespace trimmed on every line, blank lines dropped, the whole trimmed.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    lines.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests;
