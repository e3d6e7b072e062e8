-- 0011: media of other units, cached.
--
-- When a user of this unit opens `mxc://<peer>/<id>`, the unit fetches the item once over
-- federation from that allow-listed peer and keeps it: later reads (and thumbnails) are served
-- from here even while the link to the peer is down. The bytes go into the same content store
-- as local uploads (`<data_dir>/media/<aa>/<sha256>`, shared with identical local files, copied
-- by `appliance backup`); this table names them.
--
-- A table of its own rather than rows in `media`: `media` is what this unit issued, keyed by
-- media ID alone, with an uploader who must be a local user and whose quota sums those rows.
-- Remote items belong to no local user, so they count against nobody's quota, and their key
-- is the pair (origin server, media ID). Rows are written only once the file is durably in
-- place, as for uploads.

CREATE TABLE remote_media (
    -- The server name in the `mxc://` URI: an allow-listed peer when the item was fetched.
    origin        TEXT NOT NULL,
    -- The peer's media ID (checked against the spec's alphabet before any fetch).
    media_id      TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    -- As the peer served it, checked like an upload's (else application/octet-stream).
    content_type  TEXT NOT NULL,
    -- From the peer's Content-Disposition, if it named one.
    filename      TEXT,
    fetched_ts    INTEGER NOT NULL,
    PRIMARY KEY (origin, media_id)
) STRICT, WITHOUT ROWID;
