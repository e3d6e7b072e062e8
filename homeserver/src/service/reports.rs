//! Content reports (`/rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report`,
//! `/users/{userId}/report`), stored for the unit's admin (`appliance reports`). What a report
//! names is checked in the transaction that stores it.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};

use super::Server;
use super::membership::{self, Membership};
use crate::error::{Error, Result};
use crate::store::admin::{Report, add_report};
use crate::store::{WriteTx, accounts, events, state};
use crate::util::now_ms;

/// Longest reason kept: a report is a note to the admin, not a document.
const MAX_REASON: usize = 4096;

fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > MAX_REASON {
        return Err(Error::invalid_param("reason is longer than 4096 bytes"));
    }
    Ok(())
}

/// Stores `report` once `check` (run in the same transaction) has filled in what it names.
async fn file<F>(server: &Server, mut report: Report, check: F) -> Result<()>
where
    F: FnOnce(&mut WriteTx<'_>, &mut Report) -> Result<()> + Send + 'static,
{
    check_reason(&report.reason)?;
    server
        .store
        .write(move |tx| {
            check(tx, &mut report)?;
            tracing::info!(reporter = %report.reporter, kind = %report.kind, "content reported");
            add_report(tx, &report)
        })
        .await
}

fn report(reporter: &UserId, kind: &str, reason: String) -> Report {
    Report {
        id: 0,
        reporter: reporter.to_string(),
        kind: kind.to_owned(),
        room_id: None,
        event_id: None,
        target_user: None,
        reason,
        created_ts: now_ms(),
    }
}

/// Reports an event: the reporter must be joined to the room and the event there and not
/// redacted; otherwise `M_NOT_FOUND`, whether or not the event exists.
pub async fn event(
    server: &Server,
    reporter: &UserId,
    room: OwnedRoomId,
    event: OwnedEventId,
    reason: String,
) -> Result<()> {
    let mut r = report(reporter, "event", reason);
    r.room_id = Some(room.to_string());
    r.event_id = Some(event.to_string());
    file(server, r, move |tx, r| {
        let sender =
            if membership::current(tx, room.as_str(), &r.reporter)? == Some(Membership::Join) {
                events::get_room_event(tx, room.as_str(), event.as_str())?
                    .filter(|ev| ev.redacted_by.is_none())
                    .map(|ev| ev.pdu.sender.to_string())
            } else {
                None
            };
        r.target_user = Some(sender.ok_or_else(|| {
            Error::not_found("The event was not found or you are not joined to the room")
        })?);
        Ok(())
    })
    .await
}

/// Reports a room: any room this unit knows, joined or not (the spec does not require
/// membership); unknown rooms are `M_NOT_FOUND`.
pub async fn room(
    server: &Server,
    reporter: &UserId,
    room: OwnedRoomId,
    reason: String,
) -> Result<()> {
    let mut r = report(reporter, "room", reason);
    r.room_id = Some(room.to_string());
    file(server, r, move |tx, _| {
        if state::get_room(tx, room.as_str())?.is_none() {
            return Err(Error::not_found("The room was not found"));
        }
        Ok(())
    })
    .await
}

/// Reports a user: a local user must exist (`M_NOT_FOUND` otherwise: every account on a unit
/// is a colleague, so there is nothing to conceal); users of other units are taken as given.
pub async fn user(
    server: &Server,
    reporter: &UserId,
    target: OwnedUserId,
    reason: String,
) -> Result<()> {
    let local = target.server_name() == server.server_name();
    let mut r = report(reporter, "user", reason);
    r.target_user = Some(target.to_string());
    file(server, r, move |tx, _| {
        if local && accounts::get_user(tx, target.as_str())?.is_none() {
            return Err(Error::not_found("The user was not found"));
        }
        Ok(())
    })
    .await
}
