-- 0004: the media repository.
--
-- The bytes of media live on disk, not in SQLite: a unit's database is copied whole by every
-- backup and checkpointed on a schedule, and 50 MiB blobs in it would make both slow. Files are
-- named by the SHA-256 of their content (`<data_dir>/media/<first two hex>/<sha256 hex>`), so
-- two uploads of the same bytes share one file; these tables hold everything else.
--
-- * `media` is one row per `mxc://` ID we issued. A row whose `sha256` is NULL was created
--   through `POST /_matrix/media/v1/create` and is still waiting for its bytes until
--   `expires_ts`; the content columns are filled in together when they arrive. A file is
--   always durably in place before the row naming it commits, so a row never points at
--   nothing. `uploader` feeds the per-user quota.
-- * `media_thumbnails` caches generated thumbnails by the hash of their source and the
--   requested size and method, so a thumbnail is decoded and encoded once however many media
--   IDs share the source. The thumbnail's own bytes are in the same content store.

CREATE TABLE media (
    -- Random, 24 characters of [A-Za-z0-9]: unguessable, and safe in paths and URLs.
    media_id      TEXT PRIMARY KEY NOT NULL,
    uploader      TEXT NOT NULL REFERENCES users(user_id),
    created_ts    INTEGER NOT NULL,
    -- Set only while the row waits for its bytes (async upload).
    expires_ts    INTEGER,
    sha256        TEXT,
    size          INTEGER,
    content_type  TEXT,
    filename      TEXT,
    uploaded_ts   INTEGER,
    CHECK ((sha256 IS NULL) = (size IS NULL)),
    CHECK ((sha256 IS NULL) = (content_type IS NULL)),
    CHECK ((sha256 IS NULL) = (uploaded_ts IS NULL)),
    CHECK (sha256 IS NOT NULL OR expires_ts IS NOT NULL)
) STRICT, WITHOUT ROWID;
-- The quota sums a user's uploads.
CREATE INDEX media_uploader ON media(uploader);
-- Pending async uploads per user, to limit and expire them.
CREATE INDEX media_pending ON media(uploader, expires_ts) WHERE sha256 IS NULL;

CREATE TABLE media_thumbnails (
    source_sha256  TEXT NOT NULL,
    width          INTEGER NOT NULL,
    height         INTEGER NOT NULL,
    method         TEXT NOT NULL CHECK (method IN ('crop', 'scale')),
    -- The thumbnail's bytes; equal to `source_sha256` when the source itself is served
    -- because it is already small enough.
    sha256         TEXT NOT NULL,
    size           INTEGER NOT NULL,
    content_type   TEXT NOT NULL,
    created_ts     INTEGER NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method)
) STRICT, WITHOUT ROWID;
