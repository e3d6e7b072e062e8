//! The local public room directory (`/publicRooms`), one listing for the client API and for
//! other units over federation.
//!
//! Pages are offsets into the directory in a stable order, handed out as opaque tokens
//! (`d<offset>`), so a client cannot mistake one for a number it may do arithmetic on; a
//! `since` that is not such a token is 400 `M_INVALID_PARAM`.

use serde_json::{Value, json};

use super::Server;
use crate::error::{Error, Result};
use crate::service::federation::hierarchy::room_summary;
use crate::store::state;

/// Entries on a page when the request sets no limit, and the most on one page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

/// What a directory page asks for.
#[derive(Debug, Clone, Default)]
pub struct DirectoryQuery {
    /// Most entries to return.
    pub limit: Option<usize>,
    /// A `next_batch` or `prev_batch` token of an earlier page.
    pub since: Option<String>,
    /// Only rooms whose name, topic or canonical alias contain this (case-insensitive).
    pub term: Option<String>,
}

/// The token of the page starting at `offset`.
fn token(offset: usize) -> String {
    format!("d{offset}")
}

/// The offset a `since` token names.
fn parse_since(raw: &str) -> Result<usize> {
    raw.strip_prefix('d')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("Invalid since token {raw:?}")))
}

/// One page of this unit's public rooms (spec: `PublicRoomsResponse`).
pub async fn local_public_rooms(server: &Server, query: DirectoryQuery) -> Result<Value> {
    let offset = query
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let term = query.term.map(|t| t.to_lowercase());
    let all = server
        .store
        .read(move |conn| {
            let mut out = Vec::new();
            for room in state::public_rooms(conn)? {
                let summary = room_summary(conn, &room)?;
                let matches = term.as_ref().is_none_or(|t| {
                    ["name", "topic", "canonical_alias"].iter().any(|k| {
                        summary
                            .get(k)
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.to_lowercase().contains(t))
                    })
                });
                if matches {
                    out.push(summary);
                }
            }
            Ok(out)
        })
        .await?;
    let total = all.len();
    let chunk: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let mut body = json!({"chunk": chunk, "total_room_count_estimate": total});
    if offset.saturating_add(limit) < total {
        body["next_batch"] = json!(token(offset + limit));
    }
    if offset > 0 {
        body["prev_batch"] = json!(token(offset.saturating_sub(limit)));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_numbers_are_refused() {
        assert_eq!(parse_since(&token(0)).expect("d0"), 0);
        assert_eq!(parse_since(&token(250)).expect("d250"), 250);
        for bad in [
            "",
            "d",
            "5",
            "-1",
            "d-1",
            "d+1",
            "d1x",
            "x5",
            "d99999999999999999999999",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }
}
