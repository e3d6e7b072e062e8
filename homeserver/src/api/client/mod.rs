//! Client-Server API handlers, one file per spec area, and the route table.

mod account;
mod account_data;
mod backup;
mod delayed_events;
mod devices;
mod directory;
pub use directory::room_summary;
mod appservice_ping;
mod discovery;
mod keys;
mod legacy;
mod media;
mod membership;
mod messages;
mod oauth;
mod openid;
mod presence;
mod profile;
mod push;
mod relations;
mod report;
mod room;
mod search;
mod sliding_sync;
mod space;
mod sync;
mod thirdparty;
mod typing;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};

use crate::service::Server;

/// The routes whose requests may wait for new data (long polls): counted apart from the
/// ordinary connection caps, see `api/conn.rs`.
pub const LONG_POLL_PATHS: &[&str] = &[
    "/_matrix/client/v3/sync",
    "/_matrix/client/v3/events",
    "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
    "/_matrix/client/v4/sync",
    "/_matrix/client/v5/sync",
];

/// Every client route. Paths are listed once; unknown paths and methods fall through to the
/// router's 404/405 handlers.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    let r = |path: &str| format!("{V3}{path}");
    Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .route("/.well-known/matrix/client", get(discovery::well_known))
        .route(&r("/capabilities"), get(discovery::capabilities))
        .route(&r("/voip/turnServer"), get(discovery::turn_server))
        .route(&r("/register"), post(account::register))
        .route(&r("/register/available"), get(account::available))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(account::token_validity),
        )
        .route(&r("/login"), get(account::login_flows).post(account::login))
        .route(&r("/logout"), post(account::logout))
        .route(&r("/logout/all"), post(account::logout_all))
        .route(&r("/refresh"), post(account::refresh))
        .route(&r("/account/whoami"), get(account::whoami))
        .route(&r("/account/password"), post(account::change_password))
        .route(&r("/account/deactivate"), post(account::deactivate))
        .route(&r("/account/3pid"), get(account::threepids))
        .route(&r("/account/3pid/add"), post(account::threepid_add))
        .route(&r("/account/3pid/bind"), post(account::threepid_add))
        .route(&r("/account/3pid/delete"), post(account::threepid_delete))
        .route(&r("/account/3pid/unbind"), post(account::threepid_delete))
        .route(
            &r("/register/{medium}/requestToken"),
            post(account::threepid_request_token),
        )
        .route(
            &r("/account/password/{medium}/requestToken"),
            post(account::threepid_request_token),
        )
        .route(
            &r("/account/3pid/{medium}/requestToken"),
            post(account::threepid_request_token),
        )
        .route(&r("/profile/{user_id}"), get(profile::get_profile))
        .route(
            &r("/profile/{user_id}/{field}"),
            get(profile::get_field).put(profile::set_field),
        )
        .route(&r("/createRoom"), post(room::create_room))
        .route(&r("/joined_rooms"), get(membership::joined_rooms))
        .route(&r("/rooms/{room_id}/join"), post(membership::join_room))
        .route(
            &r("/join/{room_id_or_alias}"),
            post(membership::join_by_id_or_alias),
        )
        .route(&r("/rooms/{room_id}/leave"), post(membership::leave))
        .route(&r("/knock/{room_id_or_alias}"), post(membership::knock))
        .route(&r("/rooms/{room_id}/forget"), post(membership::forget))
        .route(&r("/rooms/{room_id}/invite"), post(membership::invite))
        .route(&r("/rooms/{room_id}/kick"), post(membership::kick))
        .route(&r("/rooms/{room_id}/ban"), post(membership::ban))
        .route(&r("/rooms/{room_id}/unban"), post(membership::unban))
        .route(&r("/rooms/{room_id}/members"), get(membership::members))
        .route(
            &r("/rooms/{room_id}/joined_members"),
            get(membership::joined_members),
        )
        .route(&r("/rooms/{room_id}/state"), get(room::full_state))
        .route(&r("/rooms/{room_id}/upgrade"), post(room::upgrade))
        .route(
            &r("/rooms/{room_id}/state/{event_type}"),
            get(room::get_state_empty_key).put(room::put_state_empty_key),
        )
        .route(
            &r("/rooms/{room_id}/state/{event_type}/"),
            get(room::get_state_empty_key).put(room::put_state_empty_key),
        )
        .route(
            &r("/rooms/{room_id}/state/{event_type}/{state_key}"),
            get(room::get_state).put(room::put_state),
        )
        .route(
            &r("/rooms/{room_id}/send/{event_type}/{txn_id}"),
            put(room::send),
        )
        .route(
            &r("/rooms/{room_id}/redact/{event_id}/{txn_id}"),
            put(room::redact),
        )
        .route(
            &r("/rooms/{room_id}/event/{event_id}"),
            get(messages::get_event),
        )
        .route(
            &r("/rooms/{room_id}/context/{event_id}"),
            get(messages::context),
        )
        .route(&r("/rooms/{room_id}/messages"), get(messages::messages))
        .route(
            "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event",
            get(messages::timestamp_to_event),
        )
        .route(
            &r("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"),
            post(account_data::receipt),
        )
        .route(
            &r("/rooms/{room_id}/read_markers"),
            post(account_data::read_markers),
        )
        .route(
            &r("/rooms/{room_id}/typing/{user_id}"),
            put(typing::set_typing),
        )
        .route(&r("/rooms/{room_id}/aliases"), get(directory::room_aliases))
        .route(
            &r("/directory/room/{alias}"),
            get(directory::get_alias)
                .put(directory::put_alias)
                .delete(directory::delete_alias),
        )
        .route(
            &r("/directory/list/room/{room_id}"),
            get(directory::get_visibility).put(directory::set_visibility),
        )
        .route(
            &r("/publicRooms"),
            get(directory::public_rooms).post(directory::search_public_rooms),
        )
        .route(
            &format!(
                "{}/rooms/{{room_id}}/delayed_event/{{event_type}}/{{txn_id}}",
                delayed_events::PREFIX
            ),
            put(delayed_events::schedule),
        )
        .route(
            &format!("{}/delayed_events", delayed_events::PREFIX),
            get(delayed_events::list),
        )
        .route(
            &format!("{}/delayed_events/{{delay_id}}", delayed_events::PREFIX),
            get(delayed_events::get_one).post(delayed_events::manage_in_body),
        )
        .route(
            &format!(
                "{}/delayed_events/{{delay_id}}/{{action}}",
                delayed_events::PREFIX
            ),
            post(delayed_events::manage),
        )
        .route(&r("/sync"), get(sync::sync))
        .route(&r("/initialSync"), get(legacy::initial_sync))
        .route(&r("/events"), get(legacy::events))
        .route(&r("/events/{event_id}"), get(legacy::event))
        .route(
            &r("/rooms/{room_id}/initialSync"),
            get(legacy::room_initial_sync),
        )
        .route(
            &r("/user/{user_id}/openid/request_token"),
            post(openid::request_token),
        )
        .route(&r("/user/{user_id}/filter"), post(sync::create_filter))
        .route(
            &r("/user/{user_id}/filter/{filter_id}"),
            get(sync::get_filter),
        )
        .route(
            &r("/user/{user_id}/account_data/{kind}"),
            get(account_data::get_global).put(account_data::put_global),
        )
        .route(
            &r("/user/{user_id}/rooms/{room_id}/tags"),
            get(account_data::get_tags),
        )
        .route(
            &r("/user/{user_id}/rooms/{room_id}/tags/{tag}"),
            put(account_data::put_tag).delete(account_data::delete_tag),
        )
        .route(
            &r("/user/{user_id}/rooms/{room_id}/account_data/{kind}"),
            get(account_data::get_room).put(account_data::put_room),
        )
        .route(
            &r("/directory/list/appservice/{network_id}/{room_id}"),
            put(directory::set_appservice_visibility),
        )
        .merge(devices::routes())
        .merge(keys::routes())
        .merge(media::routes())
        .merge(search::routes())
        .merge(backup::routes())
        .merge(relations::routes())
        .merge(push::routes())
        .merge(presence::routes())
        .merge(report::routes())
        .merge(space::routes())
        .merge(sliding_sync::routes())
        .merge(thirdparty::routes())
        .merge(appservice_ping::routes())
        .merge(oauth::routes())
}
