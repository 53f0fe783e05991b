//! Flashcard generation: the generator trait, the offline `rules` generator and the `openai` one.
//! Depends on nothing internal.
//!
//! Input is [`Content`]: Notion page objects with their block trees (children inlined), as the
//! fetch step delivers them. Output is a list of [`Card`]s in document order, each identified by
//! `(source_block_id, source)`: the toggle / heading block it came from, or the data-source row
//! page. [`content_hash`] lets the generate step skip content that has not changed.
//!
//! Read in this order: [`content`] (the input and how it is walked), [`rules`] (the convention of
//! Notion-to-Anki tools), [`render`] (blocks and rich text to text), [`openai`], [`hash`].

pub mod content;
pub mod error;
pub mod hash;
pub mod openai;
mod properties;
pub mod render;
pub mod rules;

#[cfg(test)]
mod test_fixtures;

use serde::{Deserialize, Serialize};

pub use content::{Content, ContentPage};
pub use error::GenerateError;
pub use hash::content_hash;
pub use openai::{OpenAiConfig, OpenAiConfigError, OpenAiGenerator};
pub use rules::RulesGenerator;

/// One flashcard. Its identity is `(source_block_id, source)`: regenerating unchanged content
/// yields the same identities, so persisting cards is an upsert and a card whose source is gone
/// can be retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// The page the card comes from: the page, or the data-source row page, holding the source.
    pub source_page_id: String,
    /// The toggle / toggleable heading block id, or the row page id (`source = Row`). As Notion
    /// gives it (dashed, lowercase).
    pub source_block_id: String,
    pub source: CardSource,
    pub front: String,
    pub back: String,
}

/// What a card's `source_block_id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardSource {
    /// A block: a toggle, a toggleable heading (rules) or any cited block (openai).
    Block,
    /// A data-source row: the card is the row's title and properties.
    Row,
}

impl CardSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Row => "row",
        }
    }
}

/// The configured generator (`FLASHCARD_GENERATOR`). An enum rather than a trait object: two
/// variants, `async fn` without boxing, and the future stays `Send`.
#[derive(Debug, Clone)]
pub enum Generator {
    Rules(RulesGenerator),
    OpenAi(OpenAiGenerator),
}

/// A generation made in parts (one model request per part of the notes), as far as it got:
/// saved with the step between attempts, so a long generation goes on where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialCards {
    /// What the parts were made from: the model and every part's notes, hashed. Progress
    /// saved under another (a deploy that splits or renders notes differently, another model)
    /// starts over rather than skip or mix parts.
    #[serde(default)]
    pub fingerprint: String,
    /// How many parts the notes were split into.
    pub parts: usize,
    /// How many of them are done, in order.
    pub done: usize,
    /// Their cards, in document order.
    pub cards: Vec<Card>,
}

impl Generator {
    /// Turns content into cards, in document order. Pages marked `gone` give no cards.
    pub async fn generate(&self, content: &Content) -> Result<Vec<Card>, GenerateError> {
        let mut progress = PartialCards::default();
        let never = std::sync::atomic::AtomicBool::new(false);
        self.generate_from(content, &mut progress, std::time::Duration::MAX, &never).await?;
        Ok(progress.cards)
    }

    /// Goes on with a generation from `progress`, starting no new part once `budget` has
    /// passed or `stop` is set (graceful shutdown; at least one part is made each time, so it
    /// always advances). `true`: finished,
    /// `progress.cards` are all the cards. On an error, `progress` holds the parts done before
    /// it. The `rules` generator finishes at once.
    pub async fn generate_from(
        &self,
        content: &Content,
        progress: &mut PartialCards,
        budget: std::time::Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, GenerateError> {
        match self {
            Self::Rules(rules) => {
                *progress =
                    PartialCards { parts: 1, done: 1, cards: rules.generate(content)?, ..Default::default() };
                Ok(true)
            }
            Self::OpenAi(openai) => openai.generate_from(content, progress, budget, stop).await,
        }
    }

    /// `rules` or `openai`, as `FLASHCARD_GENERATOR` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rules(_) => "rules",
            Self::OpenAi(_) => "openai",
        }
    }
}

impl From<RulesGenerator> for Generator {
    fn from(rules: RulesGenerator) -> Self {
        Self::Rules(rules)
    }
}

impl From<OpenAiGenerator> for Generator {
    fn from(openai: OpenAiGenerator) -> Self {
        Self::OpenAi(openai)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_generate_future_is_send_so_workers_can_spawn_it() {
        let generator = Generator::Rules(RulesGenerator);
        let content = Content { pages: vec![] };
        assert_send(&generator.generate(&content));
    }

    #[test]
    fn card_sources_serialise_as_lowercase_words() {
        assert_eq!(serde_json::to_string(&CardSource::Row).unwrap(), "\"row\"");
        assert_eq!(CardSource::Block.as_str(), "block");
    }
}
