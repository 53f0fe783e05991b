//! A data-source row's properties as the back of its card: `Name: value` lines.
//!
//! Every property except the title, sorted by name (byte order, so the order never depends on
//! how the JSON object was read), one line each; empty values are skipped. Rendered types:
//! `rich_text`, `select`, `status`, `multi_select` (names joined with `, `), `number`, `date`
//! (`start` or `start → end`), `url`, `email`, `phone_number`, `checkbox` (`Yes` / `No`) and
//! `formula` (its string, number, boolean or date). Other types (people, relations, files,
//! rollups, timestamps…) are not text and are left out.

use serde_json::Value;

use super::{
    content::{ContentPage, property_type},
    render::plain_text,
};

/// The `Name: value` lines of a row's non-title properties ("" if none has a value).
pub(crate) fn row_back(page: &ContentPage) -> String {
    let mut properties: Vec<(&str, &Value)> =
        page.properties().filter(|(_, property)| property_type(property) != "title").collect();
    properties.sort_by(|a, b| a.0.cmp(b.0));
    let mut lines = Vec::new();
    for (name, property) in properties {
        let Some(value) = property_value(property) else { continue };
        let mut value_lines = value.lines().map(str::trim_end).filter(|line| !line.trim().is_empty());
        let Some(first) = value_lines.next() else { continue };
        lines.push(format!("{name}: {}", first.trim_start()));
        lines.extend(value_lines.map(|line| format!("  {line}")));
    }
    lines.join("\n")
}

/// A property's value as text, `None` for empty values and types that are not text.
fn property_value(property: &Value) -> Option<String> {
    let ty = property_type(property);
    let data = property.get(ty)?;
    let text = match ty {
        "rich_text" => plain_text(data.as_array()?),
        "select" | "status" => data.get("name")?.as_str()?.to_owned(),
        "multi_select" => data
            .as_array()?
            .iter()
            .filter_map(|option| option.get("name").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(", "),
        "number" => number(data)?,
        "date" => date(data)?,
        "url" | "email" | "phone_number" => data.as_str()?.to_owned(),
        "checkbox" => yes_no(data.as_bool()?),
        "formula" => {
            let kind = data.get("type")?.as_str()?;
            let value = data.get(kind)?;
            match kind {
                "string" => value.as_str()?.to_owned(),
                "number" => number(value)?,
                "boolean" => yes_no(value.as_bool()?),
                "date" => date(value)?,
                _ => return None,
            }
        }
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

fn number(value: &Value) -> Option<String> {
    value.as_number().map(ToString::to_string)
}

fn date(value: &Value) -> Option<String> {
    let start = value.get("start")?.as_str()?;
    Some(match value.get("end").and_then(Value::as_str) {
        Some(end) => format!("{start} → {end}"),
        None => start.to_owned(),
    })
}

fn yes_no(value: bool) -> String {
    if value { "Yes" } else { "No" }.to_owned()
}
