//! Turns the crawl's flat record (blocks in arrival order, each pointing at its parent) into
//! the nested [`FetchedContent`].
//!
//! Arrival order is enough to keep document order: a list's pages are applied in cursor order,
//! so the children of any one parent arrive in order, whatever else arrives in between.

use serde_json::Value;

use super::{Crawl, FetchedContent, FetchedPage};

pub(super) fn assemble(crawl: Crawl) -> FetchedContent {
    let mut top_level: Vec<Vec<usize>> = vec![Vec::new(); crawl.pages.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); crawl.nodes.len()];
    for (index, node) in crawl.nodes.iter().enumerate() {
        if node.dropped {
            continue;
        }
        match node.parent {
            Some(parent) => children[parent].push(index),
            None => top_level[node.page].push(index),
        }
    }

    let expanded: Vec<bool> = crawl.nodes.iter().map(|n| n.expanded).collect();
    let mut blocks: Vec<Option<Value>> = crawl.nodes.into_iter().map(|n| Some(n.block)).collect();
    let mut tree = Tree { children: &children, expanded: &expanded, blocks: &mut blocks };

    let pages = crawl
        .pages
        .into_iter()
        .zip(top_level)
        .map(|(state, top)| FetchedPage {
            blocks: if state.gone { Vec::new() } else { top.iter().map(|&i| tree.build(i)).collect() },
            page: state.page,
            gone: state.gone,
        })
        .collect();

    FetchedContent { gone: crawl.gone, database: crawl.database, pages }
}

struct Tree<'a> {
    children: &'a [Vec<usize>],
    expanded: &'a [bool],
    blocks: &'a mut [Option<Value>],
}

impl Tree<'_> {
    /// Moves block `index` out of the record with its subtree attached. Each block has one
    /// parent, so each is taken exactly once.
    fn build(&mut self, index: usize) -> Value {
        let mut block = self.blocks[index].take().unwrap_or(Value::Null);
        if self.expanded[index] {
            let children = self.children;
            let kids: Vec<Value> = children[index].iter().map(|&child| self.build(child)).collect();
            if let Some(map) = block.as_object_mut() {
                map.insert("children".to_owned(), Value::Array(kids));
            }
        }
        block
    }
}
