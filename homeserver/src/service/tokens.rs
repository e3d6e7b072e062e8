//! The one owner of the client-facing position tokens: their format, their parsing, and the
//! spec error a malformed one gets (`M_INVALID_PARAM`, 400).
//!
//! Two shapes exist, both opaque to clients:
//! - a **sync token** `s<stream position>[_<typing serial>[_<to-device position>]]`, handed out
//!   as `next_batch` by `/sync` (and by the legacy `/events`), accepted wherever a position in
//!   the stream is asked for (`since`, `/keys/changes`, `/messages` `from`/`to`);
//! - a **pagination token** `t<depth>_<stream position>`: a gap in a room's topological order,
//!   handed out as `prev_batch`, `start` and `end` by `/messages`, `/context`, `/relations`,
//!   search and sliding sync.
//!
//! A pagination endpoint accepts either: a sync token is turned into the gap just after the
//! newest event of the room at or before its position ([`resolve`]).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::events::{self, StoredEvent, TopoKey};

/// A parsed sync token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    /// Stream position: everything at or before it was delivered.
    pub pos: i64,
    /// Typing serial (0 when the token carries none).
    pub typing: u64,
    /// Where to-device delivery stopped, when a sync handed out fewer messages than waited.
    pub to_device: Option<i64>,
}

impl SyncToken {
    /// Parses `s<position>[_<typing serial>[_<to-device position>]]`.
    pub fn parse(token: &str) -> Result<SyncToken> {
        let bad = || Error::invalid_param("Unknown sync token");
        let rest = token.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '_');
        let position = |raw: &str| raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
        let pos = position(parts.next().ok_or_else(bad)?)?;
        let typing = match parts.next() {
            Some(typing) => typing.parse::<u64>().map_err(|_| bad())?,
            None => 0,
        };
        let to_device = parts.next().map(position).transpose()?;
        Ok(SyncToken {
            pos,
            typing,
            to_device,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_device {
            Some(delivered) => write!(f, "s{}_{}_{delivered}", self.pos, self.typing),
            None => write!(f, "s{}_{}", self.pos, self.typing),
        }
    }
}

/// A sync token's stream position alone (`/keys/changes`, `/members?at=`).
pub fn stream_position(token: &str) -> Result<i64> {
    SyncToken::parse(token).map(|t| t.pos)
}

/// The token of a bare stream position: `s<position>`.
pub fn stream_token(pos: i64) -> String {
    format!("s{pos}")
}

/// A parsed pagination parameter: a gap in topological order, or a sync token's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageToken {
    /// `t<depth>_<stream>`.
    Topo(TopoKey),
    /// A sync token, standing for the gap after the room's newest event at that position.
    Stream(i64),
}

impl PageToken {
    /// Parses a pagination token or a sync token.
    pub fn parse(token: &str) -> Result<PageToken> {
        let bad = || Error::invalid_param(format!("Invalid pagination token {token:?}"));
        if let Some(rest) = token.strip_prefix('t') {
            let (depth, pos) = rest.split_once('_').ok_or_else(bad)?;
            Ok(PageToken::Topo(TopoKey {
                depth: depth.parse().map_err(|_| bad())?,
                stream_pos: pos.parse().map_err(|_| bad())?,
            }))
        } else {
            Ok(PageToken::Stream(
                stream_position(token).map_err(|_| bad())?,
            ))
        }
    }

    /// The token as a stream position: what was visible at that point (`/members?at=`).
    pub fn position(self) -> i64 {
        match self {
            PageToken::Topo(key) => key.stream_pos - 1,
            PageToken::Stream(pos) => pos,
        }
    }

    /// The gap the token names in `room`.
    pub fn resolve(self, conn: &Connection, room: &str) -> Result<TopoKey> {
        match self {
            PageToken::Topo(key) => Ok(key),
            PageToken::Stream(pos) => events::topo_key_after_stream(conn, room, pos),
        }
    }
}

/// Parses a pagination parameter and resolves it to a gap in `room`.
pub fn resolve(conn: &Connection, room: &str, token: &str) -> Result<TopoKey> {
    PageToken::parse(token)?.resolve(conn, room)
}

/// The pagination token of a gap.
pub fn topo_token(key: TopoKey) -> String {
    format!("t{}_{}", key.depth, key.stream_pos)
}

/// The gap just before `event` in topological order.
pub fn key_of(event: &StoredEvent) -> TopoKey {
    TopoKey {
        depth: event.pdu.depth as i64,
        stream_pos: event.stream_pos,
    }
}

/// The pagination token of the gap just before `event` (a timeline's `prev_batch`).
pub fn token_before(event: &StoredEvent) -> String {
    topo_token(key_of(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tokens_round_trip() {
        let t = SyncToken::parse("s12_3_9").expect("valid");
        assert_eq!((t.pos, t.typing, t.to_device), (12, 3, Some(9)));
        assert_eq!(t.to_string(), "s12_3_9");
        let t = SyncToken::parse("s5").expect("valid");
        assert_eq!((t.pos, t.typing, t.to_device), (5, 0, None));
        for bad in ["", "s", "x5", "s-1", "s5_x", "s5_1_-2", "t1_2"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn page_tokens() {
        let key = TopoKey {
            depth: 4,
            stream_pos: 17,
        };
        assert_eq!(
            PageToken::parse(&topo_token(key)).expect("valid"),
            PageToken::Topo(key)
        );
        assert_eq!(
            PageToken::parse("s9_1").expect("valid"),
            PageToken::Stream(9)
        );
        assert_eq!(PageToken::Topo(key).position(), 16);
        for bad in ["t", "t1", "t1_x", "tx_1", "q1", "s"] {
            assert!(PageToken::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
