//! Queries answered by other units (spec: Server-Server API, "Querying for information" and
//! "Public Room Directory"): remote aliases, profiles and public room lists.

use super::*;

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
    let response = server
        .federation
        .request(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let room = response
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::bad_json("directory answer without room_id"))?;
    let mut servers: Vec<String> = response
        .get("servers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    servers.insert(0, owner);
    Ok((room, servers))
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
    let response = server
        .federation
        .request(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let field = |key: &str| response.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok((field("displayname"), field("avatar_url")))
}

/// A peer's public room directory (`publicRooms` on that unit).
pub async fn remote_public_rooms(
    server: &Server,
    peer: &str,
    limit: Option<usize>,
    since: Option<String>,
    term: Option<String>,
) -> Result<Value> {
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
    server
        .federation
        .request(
            peer,
            Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(body),
        )
        .await
        .map_err(fed_error)
}
