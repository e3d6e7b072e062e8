//! Queries answered by other units (spec: Server-Server API, "Querying for information" and
//! "Public Room Directory"): remote aliases, profiles and public room lists.

use super::*;
use crate::matrix::wire::{DirectoryResponse, ProfileResponse, PublicRoomsResponse};

/// Resolves an alias of another unit through `query/directory` on that unit.
pub async fn resolve_remote_alias(
    server: &Server,
    alias: &ruma::RoomAliasId,
) -> Result<(OwnedRoomId, Vec<String>)> {
    let owner = alias.server_name().to_string();
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        urlencode(alias.as_str())
    );
    let DirectoryResponse {
        room_id,
        mut servers,
    } = server
        .federation
        .request_as(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    servers.insert(0, owner);
    Ok((room_id, servers))
}

/// A user's profile from their own unit (`query/profile`).
pub async fn remote_profile(
    server: &Server,
    user_id: &UserId,
) -> Result<(Option<String>, Option<String>)> {
    let owner = user_id.server_name().to_string();
    require_allowed_user(server, user_id)?;
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        urlencode(user_id.as_str())
    );
    let response: ProfileResponse = server
        .federation
        .request_as(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    Ok((response.displayname, response.avatar_url))
}

/// A peer's public room directory (`publicRooms` on that unit).
pub async fn remote_public_rooms(
    server: &Server,
    peer: &str,
    limit: Option<usize>,
    since: Option<String>,
    term: Option<String>,
) -> Result<PublicRoomsResponse> {
    if !server.peers.contains(peer) {
        return Err(Error::forbidden(format!(
            "{peer} is not an allow-listed peer of this unit"
        )));
    }
    let mut body = json!({});
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    if let Some(since) = since {
        body["since"] = json!(since);
    }
    if let Some(term) = term {
        body["filter"] = json!({"generic_search_term": term});
    }
    let answer: PublicRoomsResponse = server
        .federation
        .request_as(
            peer,
            Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(body),
        )
        .await
        .map_err(fed_error)?;
    Ok(answer)
}
