//! Opaque keyset cursors for the list endpoints: the (created_at, id) of the last item served.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

pub fn encode(position: (DateTime<Utc>, Uuid)) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        position.0.to_rfc3339_opts(SecondsFormat::Micros, true),
        position.1
    ))
}

/// `Err(())`: not a cursor we issued (callers answer 400 `invalid_cursor`).
#[allow(clippy::result_unit_err)]
pub fn decode(raw: &str) -> Result<(DateTime<Utc>, Uuid), ()> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).map_err(|_| ())?).map_err(|_| ())?;
    let (at, id) = text.split_once('|').ok_or(())?;
    Ok((DateTime::parse_from_rfc3339(at).map_err(|_| ())?.with_timezone(&Utc), id.parse().map_err(|_| ())?))
}

/// Splits `limit + 1` fetched rows into the page to serve and the cursor of the next one.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: usize,
    position: impl Fn(&T) -> (DateTime<Utc>, Uuid),
) -> (Vec<T>, Option<String>) {
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(|r| encode(position(r)));
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let at = Utc::now();
        let id = Uuid::now_v7();
        let decoded = decode(&encode((at, id))).expect("round trip");
        assert_eq!(decoded.1, id);
        assert_eq!(decoded.0.timestamp_micros(), at.timestamp_micros());
        assert!(decode("nope").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("2020-01-01T00:00:00Z|x")).is_err());
    }
}
