//! Blocks and rich text to readable text: the backs of cards, and the page text sent to a model.
//!
//! Rich text is read from each item's `plain_text`, which covers text, mentions (page, user,
//! date) and links; an inline equation keeps its LaTeX as `$expression$`. Block rendering,
//! one line per block (continuation lines of multi-line text are indented under the first):
//!
//! | block | line |
//! |---|---|
//! | `paragraph`, non-toggleable heading | the text |
//! | `bulleted_list_item` | `- text` |
//! | `numbered_list_item` | `1. text` (counted per run of siblings; `list_start_index`, `list_format` letters / roman honoured) |
//! | `to_do` | `[ ] text` / `[x] text` |
//! | `toggle`, toggleable heading | `▸ text` (its children follow, indented) |
//! | `quote` | `> text` (every line) |
//! | `callout` | `💡 text` (the emoji icon, if it is an emoji) |
//! | `code` | a fence: ```` ```python ````, the code lines verbatim, ```` ``` ````, then the caption if any |
//! | `equation` | `$$expression$$` |
//! | `divider` | `---` |
//! | `table` / `table_row` | one line per row, its cells separated by a spaced vertical bar |
//! | `image`, `video`, `file`, `pdf`, `audio`, `bookmark`, `embed` | the caption, if any |
//! | `column_list`, `column`, `synced_block`, `template` | nothing; their children at the same depth |
//! | `child_page`, `child_database`, `link_to_page`, `breadcrumb`, `table_of_contents`, `unsupported` | nothing, children not read |
//! | any other type | its `rich_text`, if it has one |
//!
//! Children are indented two spaces per level. Blocks with no text give no line (their children
//! still render), trailing whitespace is trimmed, and blank lines are dropped except inside code.

use std::borrow::Cow;

use serde_json::Value;

use super::content::{block_id, block_type, children, payload, rich_text};

/// The text of a rich-text array, code runs as plain text (for backs).
pub fn plain_text(items: &[Value]) -> String {
    items.iter().map(item_text).collect()
}

/// The text of a rich-text array with each run of `code`-annotated items turned into a cloze
/// deletion, `{{c1::…}}`, `{{c2::…}}`, numbered in order of appearance (for fronts). Adjacent
/// code items (Notion splits a run where another annotation changes) make one cloze; blank code
/// runs stay plain text.
pub fn cloze_text(items: &[Value]) -> String {
    let mut out = String::new();
    let mut number = 0;
    let mut rest = items;
    while let Some((first, _)) = rest.split_first() {
        if !is_code(first) {
            out.push_str(&item_text(first));
            rest = &rest[1..];
            continue;
        }
        let run_len = rest.iter().take_while(|item| is_code(item)).count();
        let run: String = rest[..run_len].iter().map(item_text).collect();
        rest = &rest[run_len..];
        let inner = run.trim();
        if inner.is_empty() {
            out.push_str(&run);
            continue;
        }
        let leading = &run[..run.len() - run.trim_start().len()];
        let trailing = &run[run.trim_end().len()..];
        out.push_str(leading);
        // Code already in `cN::…` form keeps its number (the Notion-to-Anki convention, so
        // that two runs can be one deletion); the others are numbered in order.
        if numbered_cloze(inner) {
            out.push_str(&format!("{{{{{inner}}}}}"));
        } else {
            number += 1;
            out.push_str(&format!("{{{{c{number}::{inner}}}}}"));
        }
        out.push_str(trailing);
    }
    out
}

/// Whether code text is a cloze with its number already: `c`, digits, `::`, then text.
fn numbered_cloze(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('c') else { return false };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].strip_prefix("::").is_some_and(|answer| !answer.trim().is_empty())
}

/// One rich-text item's text: `plain_text` (falling back to `text.content`), and an inline
/// equation as `$expression$`.
fn item_text(item: &Value) -> Cow<'_, str> {
    let plain = item
        .get("plain_text")
        .and_then(Value::as_str)
        .or_else(|| item.pointer("/text/content").and_then(Value::as_str))
        .unwrap_or_default();
    if item.get("type").and_then(Value::as_str) == Some("equation") {
        let expression = item.pointer("/equation/expression").and_then(Value::as_str).unwrap_or(plain);
        return Cow::Owned(format!("${expression}$"));
    }
    Cow::Borrowed(plain)
}

fn is_code(item: &Value) -> bool {
    item.pointer("/annotations/code").and_then(Value::as_bool).unwrap_or(false)
}

/// The blocks rendered as text, one line per block (see the module docs): a card's back.
pub fn render_blocks(blocks: &[Value]) -> String {
    let mut renderer = Renderer { marked: false, lines: Vec::new() };
    renderer.blocks(blocks, 0);
    renderer.lines.join("\n")
}

/// Like [`render_blocks`], but each block's first line starts with its id in brackets,
/// `[<block id>] `, and headings keep their level (`## `, `### ▸ ` if toggleable), so that a
/// model can cite blocks and see the page's structure.
pub fn render_blocks_marked(blocks: &[Value]) -> String {
    let mut renderer = Renderer { marked: true, lines: Vec::new() };
    renderer.blocks(blocks, 0);
    renderer.lines.join("\n")
}

struct Renderer {
    /// Prefix each block with its id, and headings with `#`s (the model's view).
    marked: bool,
    lines: Vec<String>,
}

/// How a block's text is laid out: the marker before its first line and before the others.
struct Layout<'a> {
    first: Cow<'a, str>,
    rest: Cow<'a, str>,
}

impl<'a> Layout<'a> {
    fn plain() -> Self {
        Self::hanging("")
    }

    /// `marker` before the first line, spaces of the same width before the others.
    fn hanging(marker: impl Into<Cow<'a, str>>) -> Self {
        let first = marker.into();
        let rest = Cow::Owned(" ".repeat(first.chars().count()));
        Self { first, rest }
    }

    /// `marker` before every line.
    fn repeated(marker: &'a str) -> Self {
        Self { first: Cow::Borrowed(marker), rest: Cow::Borrowed(marker) }
    }
}

impl Renderer {
    fn blocks(&mut self, blocks: &[Value], depth: usize) {
        let mut counter: Option<u64> = None;
        for block in blocks {
            counter = if block_type(block) == "numbered_list_item" {
                Some(counter.map_or_else(|| list_start(block), |n| n + 1))
            } else {
                None
            };
            self.block(block, depth, counter.unwrap_or(1));
        }
    }

    fn block(&mut self, block: &Value, depth: usize, number: u64) {
        let ty = block_type(block);
        let data = payload(block);
        let text = || plain_text(rich_text(block));
        match ty {
            "child_page" | "child_database" | "link_to_page" | "breadcrumb" | "table_of_contents"
            | "unsupported" => return,
            "column_list" | "column" | "synced_block" | "template" | "table" => {
                return self.blocks(children(block), depth);
            }
            "code" => self.code(block, depth),
            "paragraph" => self.text(block, depth, Layout::plain(), &text()),
            "heading_1" | "heading_2" | "heading_3" | "heading_4" => {
                let toggleable = data.get("is_toggleable").and_then(Value::as_bool).unwrap_or(false);
                let toggle = if toggleable { "▸ " } else { "" };
                let layout = if self.marked {
                    Layout::hanging(format!("{} {toggle}", "#".repeat(heading_level(ty))))
                } else {
                    Layout::hanging(toggle)
                };
                self.text(block, depth, layout, &text());
            }
            "toggle" => self.text(block, depth, Layout::hanging("▸ "), &text()),
            "bulleted_list_item" => self.text(block, depth, Layout::hanging("- "), &text()),
            "numbered_list_item" => {
                let marker = format!("{}. ", list_label(number, data.get("list_format")));
                self.text(block, depth, Layout::hanging(marker), &text());
            }
            "to_do" => {
                let checked = data.get("checked").and_then(Value::as_bool).unwrap_or(false);
                self.text(block, depth, Layout::hanging(if checked { "[x] " } else { "[ ] " }), &text());
            }
            "quote" => self.text(block, depth, Layout::repeated("> "), &text()),
            "callout" => {
                let layout = match data.pointer("/icon/emoji").and_then(Value::as_str) {
                    Some(emoji) if data.pointer("/icon/type").and_then(Value::as_str) == Some("emoji") => {
                        Layout::hanging(format!("{emoji} "))
                    }
                    _ => Layout::plain(),
                };
                self.text(block, depth, layout, &text());
            }
            "equation" => {
                let expression = data.get("expression").and_then(Value::as_str).unwrap_or_default();
                if !expression.trim().is_empty() {
                    self.text(block, depth, Layout::plain(), &format!("$${}$$", expression.trim()));
                }
            }
            "divider" => self.text(block, depth, Layout::plain(), "---"),
            "table_row" => {
                let cells = data.get("cells").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                let cells: Vec<String> = cells
                    .iter()
                    .map(|cell| plain_text(cell.as_array().map_or(&[][..], Vec::as_slice)).trim().to_owned())
                    .collect();
                if cells.iter().any(|cell| !cell.is_empty()) {
                    self.text(block, depth, Layout::plain(), &cells.join(" | "));
                }
            }
            "image" | "video" | "file" | "pdf" | "audio" | "bookmark" | "embed" => {
                self.text(block, depth, Layout::plain(), &caption(data));
            }
            _ => self.text(block, depth, Layout::plain(), &text()),
        }
        self.blocks(children(block), depth + 1);
    }

    /// Emits `text` laid out as `layout`, indented for `depth`; nothing if it has no text.
    fn text(&mut self, block: &Value, depth: usize, layout: Layout<'_>, text: &str) {
        let mut lines = text.lines().map(str::trim_end).filter(|line| !line.trim().is_empty());
        let Some(first) = lines.next() else { return };
        let indent = "  ".repeat(depth);
        let id = self.id_marker(block);
        self.lines.push(format!("{indent}{id}{}{first}", layout.first));
        for line in lines {
            self.lines.push(format!("{indent}{}{line}", layout.rest));
        }
    }

    /// A fenced code block; the code keeps its blank lines and leading whitespace.
    fn code(&mut self, block: &Value, depth: usize) {
        let code = plain_text(rich_text(block));
        if code.trim().is_empty() {
            return;
        }
        let data = payload(block);
        let language = match data.get("language").and_then(Value::as_str).unwrap_or_default() {
            "plain text" => "",
            language => language,
        };
        let indent = "  ".repeat(depth);
        let id = self.id_marker(block);
        self.lines.push(format!("{indent}{id}```{language}"));
        let body: Vec<&str> = code.lines().map(str::trim_end).collect();
        let start = body.iter().position(|line| !line.is_empty()).unwrap_or(0);
        let end = body.iter().rposition(|line| !line.is_empty()).map_or(0, |i| i + 1);
        for line in &body[start..end] {
            self.lines.push(if line.is_empty() { String::new() } else { format!("{indent}{line}") });
        }
        self.lines.push(format!("{indent}```"));
        let caption = caption(data);
        let caption = caption.trim();
        if !caption.is_empty() {
            self.lines.push(format!("{indent}{caption}"));
        }
    }

    fn id_marker(&self, block: &Value) -> String {
        match (self.marked, block_id(block)) {
            (true, Some(id)) => format!("[{id}] "),
            _ => String::new(),
        }
    }
}

fn caption(data: &Value) -> String {
    plain_text(data.get("caption").and_then(Value::as_array).map_or(&[], Vec::as_slice))
}

fn heading_level(ty: &str) -> usize {
    ty.strip_prefix("heading_").and_then(|n| n.parse().ok()).unwrap_or(1)
}

fn list_start(block: &Value) -> u64 {
    payload(block).get("list_start_index").and_then(Value::as_u64).unwrap_or(1)
}

/// `3`, `c` or `iii` for the third item, by the list's `list_format`.
fn list_label(number: u64, format: Option<&Value>) -> String {
    match format.and_then(Value::as_str) {
        Some("letters") => letters(number),
        Some("roman") => roman(number),
        _ => number.to_string(),
    }
}

/// 1 → a, 26 → z, 27 → aa (bijective base 26, as list numbering does).
fn letters(mut number: u64) -> String {
    let mut out = Vec::new();
    while number > 0 {
        number -= 1;
        out.push(b'a' + (number % 26) as u8);
        number /= 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn roman(mut number: u64) -> String {
    const NUMERALS: [(u64, &str); 13] = [
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ];
    if number == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (value, numeral) in NUMERALS {
        while number >= value {
            out.push_str(numeral);
            number -= value;
        }
    }
    out
}

#[cfg(test)]
mod tests;
