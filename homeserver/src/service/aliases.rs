//! Room aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`): resolving this
//! unit's aliases, and who may create or delete one. Each authorisation runs in the
//! transaction that writes. Another unit's alias is resolved through that unit
//! (`service::federation::route::resolve_alias`).
//!
//! Application services' alias namespaces: an alias in an appservice's exclusive namespace
//! is that appservice's alone to create or delete (400 `M_EXCLUSIVE` for anyone else), and an
//! appservice manages only aliases in its namespaces, those without needing to be in the room
//! or to hold power in it (spec: "Server admin style permissions").

use ruma::{OwnedRoomAliasId, OwnedRoomId, UserId};

use super::Server;
use super::membership::{self, Membership};
use super::rooms;
use crate::error::ErrorCode;
use crate::error::{Error, Result};
use crate::matrix::appservice::{NamespaceKind, Registration};
use crate::store::misc;

/// An alias's room and the servers that can be joined through.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The room the alias points at.
    pub room_id: OwnedRoomId,
    /// Servers the room can be joined through.
    pub servers: Vec<String>,
}

/// Resolves one of this unit's aliases from the database (`M_NOT_FOUND` when none). An
/// unknown alias in an appservice's namespace is first asked of the appservice, which may
/// create it (spec: Application Service API, "Querying").
pub async fn resolve(server: &Server, alias: &OwnedRoomAliasId) -> Result<Resolved> {
    let key = alias.to_string();
    let lookup = |key: String| async move {
        server
            .store
            .read(move |conn| misc::get_alias(conn, &key))
            .await
    };
    let mut found = lookup(key.clone()).await?;
    if found.is_none() && super::appservice::query::alias_exists(server, &key).await {
        found = lookup(key).await?;
    }
    let room = found
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?
        .room_id;
    Ok(Resolved {
        room_id: OwnedRoomId::try_from(room.as_str())
            .map_err(|_| Error::invalid_param(format!("{room:?} is not a valid room ID")))?,
        servers: vec![server.server_name().to_string()],
    })
}

/// Refuses an alias of another unit: only this unit's aliases are managed here.
fn require_local(server: &Server, alias: &OwnedRoomAliasId) -> Result<()> {
    if alias.server_name() != server.server_name() {
        return Err(Error::invalid_param(
            "Aliases of other units cannot be managed here",
        ));
    }
    Ok(())
}

/// Who may create or delete `alias` as far as appservice namespaces go: `Ok(true)` when
/// `appservice` (the request's, if it came with an `as_token`) manages it, `Ok(false)` for an
/// ordinary user and an alias no appservice claims exclusively, and 400 `M_EXCLUSIVE` for an
/// alias outside the requesting appservice's namespaces or claimed by another appservice.
pub fn appservice_may_manage(
    server: &Server,
    appservice: Option<&Registration>,
    alias: &str,
) -> Result<bool> {
    let owner = server
        .appservices
        .exclusive_owner(NamespaceKind::Aliases, alias);
    match appservice {
        Some(reg)
            if reg.is_interested(NamespaceKind::Aliases, alias)
                && owner.as_ref().is_none_or(|o| o.id == reg.id) =>
        {
            Ok(true)
        }
        Some(_) => Err(Error::new(
            ErrorCode::Exclusive,
            format!("{alias} is not in the application service's alias namespace"),
        )),
        None => match owner {
            Some(owner) => Err(Error::new(
                ErrorCode::Exclusive,
                format!(
                    "{alias} is reserved by the application service {:?}",
                    owner.id
                ),
            )),
            None => Ok(false),
        },
    }
}

/// Creates a local alias for `room`; the user must be joined to it unless `appservice`
/// manages the alias (409 `M_UNKNOWN` when the alias exists).
pub async fn create(
    server: &Server,
    user: &UserId,
    appservice: Option<&Registration>,
    alias: OwnedRoomAliasId,
    room: OwnedRoomId,
) -> Result<()> {
    require_local(server, &alias)?;
    let managed = appservice_may_manage(server, appservice, alias.as_str())?;
    let user = user.to_string();
    server
        .store
        .write(move |tx| {
            if crate::store::state::get_room(tx, room.as_str())?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
            if !managed && membership::current(tx, room.as_str(), &user)? != Some(Membership::Join)
            {
                return Err(Error::forbidden(
                    "You must be in the room to give it an alias",
                ));
            }
            if !misc::create_alias(tx, alias.as_str(), room.as_str(), &user)? {
                return Err(Error::Conflict("Room alias already exists".to_owned()));
            }
            Ok(())
        })
        .await
}

/// Deletes a local alias: its creator may, and so may whoever may set the room's
/// `m.room.canonical_alias`, and the appservice that manages it.
pub async fn delete(
    server: &Server,
    user: &UserId,
    appservice: Option<&Registration>,
    alias: OwnedRoomAliasId,
) -> Result<()> {
    require_local(server, &alias)?;
    let managed = appservice_may_manage(server, appservice, alias.as_str())?;
    let user = user.to_string();
    server
        .store
        .write(move |tx| {
            let Some(found) = misc::get_alias(tx, alias.as_str())? else {
                return Err(Error::not_found("Room alias not found"));
            };
            if found.creator != user && !managed {
                let power = crate::store::state::power_levels(tx, &found.room_id)?;
                if power.user_level(&user) < power.state_level("m.room.canonical_alias") {
                    return Err(Error::forbidden("You may not remove this alias"));
                }
            }
            misc::delete_alias(tx, alias.as_str())
        })
        .await
}

/// The local aliases of a room the user may read the membership of.
pub async fn of_room(server: &Server, user: &UserId, room: OwnedRoomId) -> Result<Vec<String>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            rooms::membership_access(conn, room.as_str(), &user)?;
            misc::room_aliases(conn, room.as_str())
        })
        .await
}
