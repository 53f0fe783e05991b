//! `persist`: upsert the cards by their source, retire the cards whose source is gone, and
//! record the sync, on the step's fenced transaction. Running it twice has the same effect as
//! once. Its output (the counts, and whether the content was gone) is what the sync's
//! `Internal sync completed` line reports once it is committed ([`super::log_success`]).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{StepDeps, StepError, StepOutcome, previous_output};
use crate::{
    flashcards::{Card, CardSource},
    ids::NotionId,
    notion::FetchedContent,
    store::{ClaimedStep, EventTarget, NewCard, StoreTx, SyncRecord, SyncScope},
};

#[derive(Deserialize)]
struct Generated {
    content_hash: String,
    cards: Vec<Card>,
}

pub async fn run(tx: &mut StoreTx, claim: &ClaimedStep, _deps: &StepDeps) -> Result<StepOutcome, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let fetched: FetchedContent =
        previous_output(claim, "fetch", "content", tx.step_output(claim.run_id, "fetch")).await?;
    let generated: Generated =
        previous_output(claim, "generate", "", tx.step_output(claim.run_id, "generate")).await?;

    let database = claim.notion_kind.as_deref() == Some("database");
    // Content the user no longer follows (unsubscribed while its sync waited in debounce, or a
    // row that left the followed database meanwhile) is left as its last sync made it, as
    // unsubscribing promises: no card is written or retired. (A row that left keeps its
    // database on its cards, so that database's next sync retires them, as for any row gone
    // from it; made anew here, with no database, no sync would ever reach them again.)
    let unfollowed = !followed(tx, claim, Some(&fetched)).await?;
    let scope = SyncScope {
        pages: if unfollowed {
            Vec::new()
        } else if fetched.gone || !database {
            vec![notion_id.to_owned()]
        } else {
            fetched.pages.iter().filter_map(|p| page_id(&p.page)).map(str::to_owned).collect()
        },
        container: (database && !unfollowed).then(|| notion_id.to_owned()),
    };
    let containers: std::collections::HashMap<&str, Option<String>> =
        fetched.pages.iter().filter_map(|p| Some((page_id(&p.page)?, database_of(&p.page)))).collect();
    let made = if unfollowed { &[][..] } else { &generated.cards[..] };
    let cards: Vec<NewCard> = NewCard::one_per_source(
        made.iter()
            .map(|card| NewCard {
                source_page_id: card.source_page_id.clone(),
                source_block_id: card.source_block_id.clone(),
                source_kind: match card.source {
                    CardSource::Block => "block",
                    CardSource::Row => "row",
                }
                .to_owned(),
                container_id: containers.get(card.source_page_id.as_str()).cloned().flatten(),
                front: card.front.clone(),
                back: card.back.clone(),
            })
            .collect(),
    );

    let data_source_ids = super::data_source_ids(fetched.database.as_ref());
    let content_hash = (!unfollowed).then_some(generated.content_hash);
    let record = SyncRecord { notion_id: notion_id.to_owned(), content_hash, data_source_ids };
    let counts = tx.persist_sync(user, claim.run_id, &scope, &cards, &record).await?;
    // Announced once committed (`super::log_success`), with these counts.
    let mut output = json!(counts);
    output["gone"] = json!(fetched.gone);
    if unfollowed {
        output["unfollowed"] = json!(true);
    }
    Ok(StepOutcome::Done { output })
}

/// Whether the sync's user still follows its content: a database itself, a page itself or
/// through the database it is in now, as `fetched` says (the subscriber match an event about it
/// would make); or the run was asked for by hand (a manual sync of content nobody follows syncs
/// it as a page). Also asked by `debounce`, before anything is fetched, of a database's sync.
pub(super) async fn followed(
    tx: &mut StoreTx,
    claim: &ClaimedStep,
    fetched: Option<&FetchedContent>,
) -> Result<bool, StepError> {
    let (user, notion_id) = super::sync_key(claim)?;
    let database = claim.notion_kind.as_deref() == Some("database");
    let page = match fetched {
        Some(fetched) if !database => fetched
            .pages
            .iter()
            .map(|p| &p.page)
            .find(|p| page_id(p).is_some_and(|id| same_id(id, notion_id))),
        _ => None,
    };
    // A page not found at all tells nothing of where it is: the database it was last in is
    // taken from its cards.
    let unread = !database && page.is_none();
    let kind = if database { "database" } else { "page" };
    let target = EventTarget {
        entity_id: Some(notion_id.to_owned()),
        entity_kind: Some(kind.to_owned()),
        parent_id: page.and_then(database_of),
        data_source_id: page
            .and_then(|page| page.pointer("/parent/data_source_id"))
            .and_then(Value::as_str)
            .and_then(|id| NotionId::parse(id).ok())
            .map(|id| id.as_str().to_owned()),
        event_type: String::new(),
    };
    Ok(tx.sync_wanted(claim.run_id, user, &target, unread).await?)
}

fn same_id(a: &str, b: &str) -> bool {
    matches!((NotionId::parse(a), NotionId::parse(b)), (Ok(a), Ok(b)) if a == b)
}

fn page_id(page: &Value) -> Option<&str> {
    page.get("id").and_then(Value::as_str)
}

/// The database a row page belongs to now (2025-09-03 pages name both the data source and the
/// database; older ones only the database), in the canonical id form subscriptions use. `None`:
/// not a row (any more). Written to the page's cards as is: a row moved out of a database, or
/// to another, must stop being retired by that database's syncs.
fn database_of(page: &Value) -> Option<String> {
    let parent = page.get("parent")?;
    let id = parent.get("database_id").and_then(Value::as_str)?;
    NotionId::parse(id).ok().map(|id| id.as_str().to_owned())
}
