//! What the model is told: the instructions, and the content as text with every block's id, and
//! the index that maps the ids it may cite back to their pages.

use std::collections::HashMap;

use super::super::{
    CardSource, Content, ContentPage, GenerateError,
    content::{block_id, is_foreign_container, walk},
    properties::row_back,
    render::{plain_text, render_blocks_marked},
};

pub(super) const SYSTEM_PROMPT: &str = r#"You write flashcards for spaced-repetition study from a student's Notion notes.

In the notes, each page starts with a line "=== Page [<page id>] <title> ===". Each block starts with its id in brackets, e.g. "[1f3c8a2e-4b7d-8105-86e7-f8a9b0c1d2e5] text". Lines starting with "▸" are toggles: the author's own question, with the answer indented below it.

Answer with one JSON object and nothing else, in exactly this shape:
{"cards": [{"front": "<question>", "back": "<answer>", "source_block_id": "<id>"}]}

Rules:
- Each toggle is a card: its text is the front and its indented content the back.
- Add cards for other important facts in the notes. Each card tests one fact or idea; never add facts that the notes do not state.
- "front" is a short question or prompt; "back" is its complete answer. Both are plain text and never empty.
- "source_block_id" is copied exactly from the brackets: the id of the block the card comes from (for a toggle, the toggle's id; for a card about a page's properties, the page id).
- At most one card per source_block_id.
- If nothing in the notes is worth a card, answer {"cards": []}."#;

/// The notes as the model reads them, in requests of at most `max_bytes` each: whole pages
/// where they fit, and a page larger than that in sections cut between its top-level blocks
/// (never inside one, so a toggle keeps its answer; a single block larger than a request is
/// sent alone). Empty when there is no text at all (nothing to ask).
pub(super) fn user_prompts(content: &Content, max_bytes: usize) -> Vec<String> {
    const HEADER: &str = "Notes:\n";
    let mut prompts = Vec::new();
    let mut current = String::from(HEADER);
    let mut has_text = false;
    let sections = content
        .pages
        .iter()
        .filter(|page| !page.gone)
        .flat_map(|page| page_sections(page, max_bytes.saturating_sub(HEADER.len())));
    for section in sections {
        if has_text && current.len() + section.len() > max_bytes {
            prompts.push(std::mem::replace(&mut current, String::from(HEADER)));
        }
        current.push_str(&section);
        has_text = true;
    }
    if has_text {
        prompts.push(current);
    }
    prompts
}

/// One page of the notes: the whole page when it fits in `max_bytes`, else in sections that
/// do (each after the first under the page's header marked continued). Empty if the page has
/// no text (no title, properties or blocks).
fn page_sections(page: &ContentPage, max_bytes: usize) -> Vec<String> {
    let id = page.page_id().unwrap_or_default();
    let title = plain_text(page.title());
    let title = title.trim();
    let mut first = format!("\n=== Page [{id}] {title} ===\n");
    let properties = if page.is_row() { row_back(page) } else { String::new() };
    if !properties.is_empty() {
        first.push_str("Properties:\n");
        first.push_str(&properties);
        first.push_str("\n\n");
    }
    let units: Vec<String> =
        block_units(&page.blocks).map(render_blocks_marked).filter(|text| !text.is_empty()).collect();
    if title.is_empty() && properties.is_empty() && units.is_empty() {
        return Vec::new();
    }
    let mut sections = Vec::new();
    let mut current = first;
    // Properties are content too: a first block that does not fit beside them goes on alone.
    let mut has_blocks = !properties.is_empty();
    for unit in units {
        if has_blocks && current.len() + unit.len() + 1 > max_bytes {
            sections.push(std::mem::replace(
                &mut current,
                format!("\n=== Page [{id}] {title} (continued) ===\n"),
            ));
        }
        current.push_str(&unit);
        current.push('\n');
        has_blocks = true;
    }
    sections.push(current);
    sections
}

/// A page's top-level blocks in the smallest runs that render the same apart as together: one
/// block each, except a numbered list, whose items count on from each other.
fn block_units(blocks: &[serde_json::Value]) -> impl Iterator<Item = &[serde_json::Value]> {
    let numbered = |block: &serde_json::Value| {
        block.get("type").and_then(serde_json::Value::as_str) == Some("numbered_list_item")
    };
    blocks.chunk_by(move |a, b| numbered(a) && numbered(b))
}

/// A block or page the model may cite.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// The id as the content spells it.
    pub id: String,
    pub page_id: String,
    pub kind: CardSource,
    /// Document order: pages in order, each page before its blocks, blocks depth first.
    pub position: usize,
}

/// Every id in the content (pages not gone, and their blocks outside child pages), by a key
/// that ignores dashes and case, so `1F3C…` or an undashed id resolves to the content's spelling.
#[derive(Debug, Default)]
pub(super) struct SourceIndex {
    by_key: HashMap<String, Source>,
}

impl SourceIndex {
    pub fn build(content: &Content) -> Result<Self, GenerateError> {
        let mut index = Self::default();
        let mut position = 0;
        for page in content.pages.iter().filter(|page| !page.gone) {
            let page_id = page
                .page_id()
                .ok_or_else(|| GenerateError::InvalidContent("a page object has no `id`".into()))?;
            let kind = if page.is_row() { CardSource::Row } else { CardSource::Block };
            index.insert(page_id, page_id, kind, &mut position);
            walk(&page.blocks, &mut |block| {
                if let Some(id) = block_id(block).filter(|_| !is_foreign_container(block)) {
                    index.insert(id, page_id, CardSource::Block, &mut position);
                }
            });
        }
        Ok(index)
    }

    fn insert(&mut self, id: &str, page_id: &str, kind: CardSource, position: &mut usize) {
        let source = Source { id: id.to_owned(), page_id: page_id.to_owned(), kind, position: *position };
        *position += 1;
        self.by_key.entry(key(id)).or_insert(source);
    }

    /// The source an id cited by the model names, if it is in the content.
    pub fn resolve(&self, cited: &str) -> Option<&Source> {
        self.by_key.get(&key(cited))
    }
}

fn key(id: &str) -> String {
    id.trim().chars().filter(|c| *c != '-').flat_map(char::to_lowercase).collect()
}
