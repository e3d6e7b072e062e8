//! Presence: online / unavailable / offline, `last_active_ago` and status messages, set by
//! clients (`PUT /presence`, `/sync?set_presence=`), shown in `/sync` to users who share a
//! room, and exchanged with peers as `m.presence` EDUs.
//!
//! Activity is recorded at most once a minute per user (a sync every few seconds must not
//! become a database write each time). The idle rule is applied when presence is read, not by
//! a timer: a local user last active more than [`IDLE_AFTER`] ago shows as `unavailable`,
//! more than [`OFFLINE_AFTER`] ago as `offline`.
//!
//! Only news takes a stream position and so reaches clients' `/sync` ([`is_news`], as
//! Synapse's `should_notify`): a new state or status message, or activity that makes a user
//! currently active again. Activity while they stay currently active moves `last_active_ts`
//! in place. Each active user's minute of activity used to wake every room-mate's long poll:
//! with a thousand users that was most of a unit's `/sync` work (`bench --crowd` over 90 s).

use std::time::Duration;

use ruma::UserId;
use serde::Serialize;
use serde_json::{Value, json};

use super::Server;
use crate::error::{Error, Result};
use crate::matrix::edu;
use crate::store::presence::{self as store, PresenceRow};
use crate::store::wake::Audience;
use crate::store::{WriteTx, e2ee, outbox};

/// How often activity alone (no state change) is written.
const ACTIVITY_RESOLUTION: Duration = Duration::from_secs(60);
/// Inactive this long: shown as `unavailable` (the spec's example threshold).
pub const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Inactive this long: shown as `offline` (no client has synced for half an hour).
pub const OFFLINE_AFTER: Duration = Duration::from_secs(30 * 60);

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a presence state string.
pub fn parse_state(state: &str) -> Result<&str> {
    match state {
        "online" | "unavailable" | "offline" => Ok(state),
        _ => Err(Error::invalid_param(
            "presence must be online, unavailable or offline",
        )),
    }
}

/// The presence a row shows now, `(state, last_active_ago, currently_active)`, with the idle
/// rule applied to local users.
fn effective(row: &PresenceRow, local: bool, now: i64) -> (String, i64, bool) {
    let ago = (now - row.last_active_ts).max(0);
    let mut state = row.state.clone();
    if local && state != "offline" {
        if ago > ms(OFFLINE_AFTER) {
            state = "offline".to_owned();
        } else if ago > ms(IDLE_AFTER) {
            state = "unavailable".to_owned();
        }
    }
    let currently_active = state == "online" && ago <= 2 * ms(ACTIVITY_RESOLUTION);
    (state, ago, currently_active)
}

/// A user's presence as a client reads it: the `m.presence` content in `/sync` and the answer
/// of `GET /presence/{userId}/status`.
#[derive(Debug, Serialize)]
pub struct PresenceContent {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    /// How long ago the user was last active (ms); absent when never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<i64>,
    /// Whether the user is active right now; absent when never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
    /// The user's status message, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
}

/// The presence of a row, as a server named `own` shows it at `now` (ms since the epoch, from
/// the server's [`Clock`](crate::clock::Clock)).
pub fn presence_at(own: &str, row: &PresenceRow, now: i64) -> PresenceContent {
    let local = row.user_id.split_once(':').is_some_and(|(_, s)| s == own);
    let (state, ago, active) = effective(row, local, now);
    PresenceContent {
        presence: state,
        last_active_ago: Some(ago),
        currently_active: Some(active),
        status_msg: row.status_msg.clone(),
    }
}

/// The `m.presence` content for a row ([`presence_at`]), as the JSON an event carries.
pub fn content_at(own: &str, row: &PresenceRow, now: i64) -> Value {
    serde_json::to_value(presence_at(own, row, now)).unwrap_or_else(|_| json!({}))
}

/// Presence from activity (`/sync`'s `set_presence`): like [`set`], but while the disk is
/// under the free-space watermark the update is skipped, so syncing keeps working read-only.
pub async fn mark_active(server: &Server, user: &UserId, state: &str) -> Result<()> {
    match set(server, user, state, None).await {
        Err(Error::ResourceLimit { .. }) => Ok(()),
        other => other,
    }
}

/// Records a local user's presence: an explicit state (and message) from `PUT /presence`,
/// or activity from a sync (`status_msg` `None` keeps the current message). Writes only
/// when something visible changes or the last write is older than a minute.
pub async fn set(
    server: &Server,
    user_id: &UserId,
    state: &str,
    status_msg: Option<Option<String>>,
) -> Result<()> {
    let state = parse_state(state)?.to_owned();
    let own = server.server_name().to_string();
    let user = user_id.to_string();
    let now = server.clock.now_ms();
    let current = {
        let user = user.clone();
        server
            .store
            .read(move |conn| store::get(conn, &user))
            .await?
    };
    let message = match &status_msg {
        Some(message) => message.clone(),
        None => current.as_ref().and_then(|c| c.status_msg.clone()),
    };
    let active = state != "offline";
    let unchanged = current.as_ref().is_some_and(|c| {
        c.state == state
            && c.status_msg == message
            && (!active || now - c.last_active_ts < ms(ACTIVITY_RESOLUTION))
    });
    if unchanged {
        return Ok(());
    }
    if let Some(current) = &current
        && !is_news(Some(current), &state, &message, true, now)
    {
        // Peers still hear of the activity, so their copy of the user does not age into
        // "not currently active"; they apply the same rule.
        let row = PresenceRow {
            last_active_ts: now,
            ..current.clone()
        };
        return server
            .store
            .write(move |tx| {
                store::touch(tx, &row.user_id, now)?;
                send_to_peers_in_tx(tx, &own, &row, now)
            })
            .await;
    }
    let receivers = super::appservice::ephemeral::receivers(&server.appservices.all());
    let any_receiver = !receivers.is_empty();
    let stored = server
        .store
        .write(move |tx| {
            let last_active_ts = match (&current, active) {
                (Some(c), false) => c.last_active_ts,
                _ => now,
            };
            let row = PresenceRow {
                user_id: user.clone(),
                state,
                status_msg: message,
                last_active_ts,
                stream_pos: tx.next_stream_pos(Audience::PeersOf(&user)),
            };
            store::set(tx, &row)?;
            if !receivers.is_empty() {
                let content = content_at(&own, &row, now);
                super::appservice::ephemeral::presence_in_tx(
                    tx,
                    &receivers,
                    &own,
                    &row.user_id,
                    &content,
                )?;
            }
            send_to_peers_in_tx(tx, &own, &row, now)
        })
        .await;
    if any_receiver {
        server.appservice_kicker.kick();
    }
    stored
}

/// Whether writing `state`, `status_msg` and fresh activity over `current` is news to the
/// clients that hold the user's presence: a first row, a new state or status message, or a
/// change of `currently_active` as the row reads now (the idle rule applied to `local` users).
/// Activity of a user who stays currently active is not (Synapse's `should_notify` likewise).
fn is_news(
    current: Option<&PresenceRow>,
    state: &str,
    status_msg: &Option<String>,
    local: bool,
    now: i64,
) -> bool {
    current.is_none_or(|current| {
        current.state != state
            || current.status_msg != *status_msg
            || effective(current, local, now).2 != (state == "online")
    })
}

/// Queues an `m.presence` EDU for every peer sharing a room with the user.
fn send_to_peers_in_tx(tx: &WriteTx<'_>, own: &str, row: &PresenceRow, now: i64) -> Result<()> {
    let servers = e2ee::servers_sharing_rooms(tx, &row.user_id, own)?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut push = json!({
        "user_id": row.user_id,
        "presence": row.state,
        "last_active_ago": (now - row.last_active_ts).max(0),
        "currently_active": row.state == "online",
    });
    if let Some(msg) = &row.status_msg {
        push["status_msg"] = json!(msg);
    }
    let edu = json!({"edu_type": "m.presence", "content": {"push": [push]}}).to_string();
    for server in servers {
        outbox::enqueue(tx, &server, "edu", &edu, now)?;
    }
    Ok(())
}

/// `GET /presence/{userId}/status`: the user's presence, `M_NOT_FOUND` if never seen.
pub async fn get(server: &Server, user_id: &UserId) -> Result<PresenceContent> {
    let user = user_id.to_string();
    let (row, local_user) = server
        .store
        .read(move |conn| {
            let row = store::get(conn, &user)?;
            let local = crate::store::accounts::get_user(conn, &user)?;
            Ok((row, local.is_some_and(|u| !u.deactivated)))
        })
        .await?;
    match row {
        Some(row) => Ok(presence_at(
            server.server_name().as_str(),
            &row,
            server.clock.now_ms(),
        )),
        // A local account that has not been active yet is simply offline, not unknown.
        None if local_user => Ok(PresenceContent {
            presence: "offline".to_owned(),
            last_active_ago: None,
            currently_active: None,
            status_msg: None,
        }),
        None => Err(Error::not_found("No presence known for this user")),
    }
}

/// Handles an `m.presence` EDU (parsed whole, so every update has a valid state): updates of
/// the origin's users; an update about another server's user is skipped.
pub async fn receive(server: &Server, origin: &str, presence: edu::Presence) -> Result<()> {
    let now = server.clock.now_ms();
    let mut rows = Vec::new();
    for update in presence.push {
        if update.user_id.server_name().as_str() != origin {
            tracing::debug!(origin, user = %update.user_id, "skipped presence of another server's user");
            continue;
        }
        rows.push((
            update.user_id.to_string(),
            update.presence.as_str().to_owned(),
            update.status_msg,
            now - update.last_active_ago.max(0),
        ));
    }
    if rows.is_empty() {
        return Ok(());
    }
    server
        .store
        .write(move |tx| {
            for (user_id, state, status_msg, last_active_ts) in rows {
                let current = store::get(tx, &user_id)?;
                if !is_news(current.as_ref(), &state, &status_msg, false, now) {
                    store::touch(tx, &user_id, last_active_ts)?;
                    continue;
                }
                let stream_pos = tx.next_stream_pos(Audience::PeersOf(&user_id));
                store::set(
                    tx,
                    &PresenceRow {
                        user_id,
                        state,
                        status_msg,
                        last_active_ts,
                        stream_pos,
                    },
                )?;
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    fn row(user_id: &str, state: &str, last_active_ts: i64) -> PresenceRow {
        PresenceRow {
            user_id: user_id.to_owned(),
            state: state.to_owned(),
            status_msg: None,
            last_active_ts,
            stream_pos: 1,
        }
    }

    fn shown(clock: &FakeClock, row: &PresenceRow) -> (String, i64, bool) {
        let content = content_at("unit.test", row, clock.now_ms());
        (
            content["presence"].as_str().expect("presence").to_owned(),
            content["last_active_ago"].as_i64().expect("ago"),
            content["currently_active"].as_bool().expect("active"),
        )
    }

    #[test]
    fn only_news_of_presence_reaches_clients() {
        let clock = FakeClock::at(1_700_000_000_000);
        let now = clock.now_ms();
        let online = row("@a:unit.test", "online", now);
        assert!(is_news(None, "online", &None, true, now), "a first row");
        let later = now + ms(ACTIVITY_RESOLUTION);
        assert!(
            !is_news(Some(&online), "online", &None, true, later),
            "a minute's activity of a user who stays currently active"
        );
        assert!(is_news(Some(&online), "unavailable", &None, true, later));
        assert!(is_news(
            Some(&online),
            "online",
            &Some("Lunch".to_owned()),
            true,
            later
        ));
        let back = now + ms(IDLE_AFTER) + 1;
        assert!(
            is_news(Some(&online), "online", &None, true, back),
            "activity after the user stopped reading as currently active"
        );
        let away = row("@a:unit.test", "unavailable", now);
        assert!(
            !is_news(Some(&away), "unavailable", &None, true, later),
            "activity while unavailable changes nothing a client shows"
        );
        let remote = row("@b:peer.test", "online", now);
        assert!(!is_news(Some(&remote), "online", &None, false, later));
        assert!(is_news(Some(&remote), "offline", &None, false, later));
    }

    #[test]
    fn a_local_user_goes_idle_then_offline() {
        let clock = FakeClock::at(1_700_000_000_000);
        let active = row("@a:unit.test", "online", clock.now_ms());
        assert_eq!(shown(&clock, &active), ("online".to_owned(), 0, true));
        clock.advance(IDLE_AFTER);
        let (state, ago, currently) = shown(&clock, &active);
        assert_eq!(state, "online", "idle only after more than IDLE_AFTER");
        assert_eq!(ago, ms(IDLE_AFTER));
        assert!(
            !currently,
            "not currently active after minutes without activity"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(shown(&clock, &active).0, "unavailable");
        clock.advance(OFFLINE_AFTER - IDLE_AFTER - Duration::from_millis(1));
        assert_eq!(shown(&clock, &active).0, "unavailable", "at OFFLINE_AFTER");
        clock.advance(Duration::from_millis(1));
        assert_eq!(shown(&clock, &active).0, "offline");
    }

    #[test]
    fn unavailable_turns_offline_and_remote_users_are_shown_as_told() {
        let clock = FakeClock::at(1_700_000_000_000);
        let away = row("@a:unit.test", "unavailable", clock.now_ms());
        let remote = row("@b:other.test", "online", clock.now_ms());
        clock.advance(OFFLINE_AFTER);
        assert_eq!(shown(&clock, &away).0, "unavailable");
        clock.advance(Duration::from_millis(1));
        assert_eq!(shown(&clock, &away).0, "offline");
        // A peer's user is idled by their own server, which sends an update.
        let (state, ago, _) = shown(&clock, &remote);
        assert_eq!(state, "online");
        assert_eq!(ago, ms(OFFLINE_AFTER) + 1);
    }

    #[test]
    fn currently_active_lasts_two_activity_periods() {
        let clock = FakeClock::at(0);
        let active = row("@a:unit.test", "online", clock.now_ms());
        clock.advance(2 * ACTIVITY_RESOLUTION);
        assert!(shown(&clock, &active).2);
        clock.advance(Duration::from_millis(1));
        assert!(!shown(&clock, &active).2);
    }
}
