//! Opaque keyset cursors for the list endpoints: the (created_at, id) of the last item served.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use uuid::Uuid;

pub fn encode(position: (DateTime<Utc>, Uuid)) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        position.0.to_rfc3339_opts(SecondsFormat::Micros, true),
        position.1
    ))
}

/// `Err(())`: not a cursor we issued (callers answer 400 `invalid_cursor`). Its time must fall
/// in the years 0001-9999 in UTC, as every stored time does: a made-up one beyond (say
/// `9999-12-31T23:59:59-01:00`) would compare as a time in PostgreSQL but as text in SQLite
/// (`+10000-…` sorts before every year), and the backends would answer differently.
#[allow(clippy::result_unit_err)]
pub fn decode(raw: &str) -> Result<(DateTime<Utc>, Uuid), ()> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).map_err(|_| ())?).map_err(|_| ())?;
    let (at, id) = text.split_once('|').ok_or(())?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| ())?.with_timezone(&Utc);
    if !(1..=9999).contains(&at.year()) {
        return Err(());
    }
    Ok((at, id.parse().map_err(|_| ())?))
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
        // Years beyond 9999 in UTC (or before 0001) are no time anything was stored at.
        let id = "0190a3c8-0000-7000-8000-000000000000";
        assert!(decode(&URL_SAFE_NO_PAD.encode(format!("9999-12-31T23:59:59-01:00|{id}"))).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(format!("0001-01-01T00:00:00+01:00|{id}"))).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(format!("9999-12-31T23:59:59Z|{id}"))).is_ok());
    }
}
