-- 0017: application services' published room directories.
--
-- An appservice lists rooms under each third-party network it bridges (spec: `PUT
-- /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`), and clients ask
-- `/publicRooms` for one network (`third_party_instance_id`) or for all of them
-- (`include_all_networks`). A room may be in several lists and in the unit's own directory
-- (`rooms.is_public`) independently, so this is a table of its own rather than a flag.
-- `appservice_id` is the registration file's `id`; rows of an appservice that is no longer
-- registered are kept (a re-added file finds its lists again) and not listed.

CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
) WITHOUT ROWID;
