//! The one "persist an event" step: what makes a stored, accepted event part of its room.
//! Local sends (`rooms::append_in_tx`, and the create event of a new room) and received PDUs
//! (`service::federation::incoming::accept_in_tx`) both call [`apply_in_tx`], in the writer
//! transaction that stored the event: the room's forward extremities, a redaction's effect on
//! its target, the room's current state (with the membership changes sync reads), and push
//! notifications for local members.
//!
//! Architecture invariant: this is a leaf of the service layer. It uses the store, the Matrix
//! rules, state resolution and push evaluation, and nothing that builds, routes or sends
//! events; every path that adds an event to a room's DAG goes through it, so none can forget a
//! step (a rejected or soft-failed PDU is stored without it: it never affects the room).

use ruma::CanonicalJsonObject;
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::matrix::pdu::Pdu;
use crate::store::{WriteTx, events, state};

/// How the room's current state follows the event.
#[derive(Debug, Clone, Copy)]
pub enum CurrentState {
    /// The event was built on top of the room's current state (a local event): its state group
    /// (`None` while the room has none) becomes the current state, and a member event's change
    /// is recorded.
    OnTop(Option<i64>),
    /// The event came from a peer and may fork or merge the DAG: the current state is
    /// recomputed from the forward extremities, resolving them when they disagree.
    Recompute,
}

/// Applies a stored, accepted event at stream position `pos` to its room (see the module
/// header), in the transaction that stored it.
pub fn apply_in_tx(
    tx: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    pos: i64,
    current: CurrentState,
) -> Result<()> {
    let room_id = pdu.room_id.as_str();
    events::advance_extremities(tx, pdu)?;
    redact_target_in_tx(tx, rules, pdu)?;
    match current {
        CurrentState::OnTop(group) => set_on_top_in_tx(tx, pdu, pos, group)?,
        CurrentState::Recompute => {
            super::state_res::recompute_current_state(tx, rules, room_id)?;
        }
    }
    super::push::notify_in_tx(tx, pdu, pos)
}

/// A redaction's effect on its target, when the target is in the room and the redaction's
/// sender may redact it: its own server's event, or with the room's redact level (spec: the
/// server-side check of room versions 3 and later; a local client's redaction was checked
/// more strictly, per sender, before the event was built).
fn redact_target_in_tx(tx: &WriteTx<'_>, rules: &RoomVersionRules, pdu: &Pdu) -> Result<()> {
    let room_id = pdu.room_id.as_str();
    if pdu.kind == TimelineEventType::RoomRedaction
        && let Some(target) = &pdu.redacts
        && let Some(stored) = events::get_room_event(tx, room_id, target.as_str())?
        && (stored.pdu.sender.server_name() == pdu.sender.server_name() || {
            let power = state::power_levels(tx, room_id)?;
            power.user_level(pdu.sender.as_str()) >= power.redact_level()
        })
    {
        apply_redaction(tx, rules, &stored, pdu.event_id.as_str())?;
    }
    Ok(())
}

/// Replaces a stored event's JSON with its redacted form (spec: redaction algorithm of the
/// room version) and records which event redacted it.
pub fn apply_redaction(
    tx: &WriteTx<'_>,
    rules: &RoomVersionRules,
    target: &events::StoredEvent,
    redacted_by: &str,
) -> Result<()> {
    let object: CanonicalJsonObject =
        serde_json::from_str(&target.pdu.json).map_err(|err| Error::internal(err.to_string()))?;
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
        .map_err(|err| Error::internal(err.to_string()))?;
    let json = serde_json::to_string(&redacted).map_err(|err| Error::internal(err.to_string()))?;
    let event_id = target.pdu.event_id.as_str();
    events::store_redaction(tx, event_id, &json, redacted_by)?;
    tx.forget_pdu(event_id);
    Ok(())
}

/// A state event built on the current state becomes current in state group `group`; a member
/// event's change is recorded for sync (and a join un-forgets the room).
fn set_on_top_in_tx(tx: &WriteTx<'_>, pdu: &Pdu, pos: i64, group: Option<i64>) -> Result<()> {
    let (Some(key), Some(group)) = (&pdu.state_key, group) else {
        return Ok(());
    };
    let room_id = pdu.room_id.as_str();
    let membership = if pdu.kind == TimelineEventType::RoomMember {
        pdu.content_value()
            .get("membership")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        None
    };
    state::set_current_state(
        tx,
        room_id,
        &pdu.kind.to_string(),
        key,
        pdu.event_id.as_str(),
        membership.as_deref(),
        group,
    )?;
    if let Some(membership) = membership {
        state::record_membership_change(tx, pos, room_id, key, &membership)?;
        if membership == "join" {
            state::set_forgotten(tx, key, room_id, false)?;
        }
    }
    Ok(())
}
