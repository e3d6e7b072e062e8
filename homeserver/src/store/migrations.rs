//! Numbered schema migrations compiled into the binary.
//!
//! Each migration runs in its own transaction together with the `PRAGMA user_version` bump, so a
//! crash mid-upgrade leaves the previous version intact.

use rusqlite::Connection;

/// The migrations in order; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_federation.sql"),
    include_str!("migrations/0003_e2ee.sql"),
    include_str!("migrations/0004_media.sql"),
    include_str!("migrations/0005_search_backup.sql"),
    include_str!("migrations/0006_push.sql"),
    include_str!("migrations/0007_presence.sql"),
    include_str!("migrations/0008_reports.sql"),
    include_str!("migrations/0009_server_notices.sql"),
    include_str!("migrations/0010_cleanup.sql"),
    include_str!("migrations/0011_remote_media.sql"),
    include_str!("migrations/0012_visibility_index.sql"),
    include_str!("migrations/0013_delayed_events.sql"),
    include_str!("migrations/0014_notification_staging.sql"),
    include_str!("migrations/0015_lazy_members.sql"),
    include_str!("migrations/0016_edges_from_pdus.sql"),
    include_str!("migrations/0017_appservice_room_lists.sql"),
    include_str!("migrations/0018_appservice_queue.sql"),
    include_str!("migrations/0019_receipts_stream.sql"),
    include_str!("migrations/0020_appservice_readd.sql"),
    include_str!("migrations/0021_oauth.sql"),
    include_str!("migrations/0022_shared_notifications.sql"),
];

/// Why migrating failed.
#[derive(Debug)]
pub enum MigrationError {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// The file was written by a newer binary.
    TooNew {
        /// Version found.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
}

impl From<rusqlite::Error> for MigrationError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(err)
    }
}

/// Brings the database up to the newest schema.
pub fn apply(conn: &mut Connection) -> Result<(), MigrationError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > known {
        return Err(MigrationError::TooNew { found, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_database_to_newest_version() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        apply(&mut conn).expect("migrations apply");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        // Applying again is a no-op.
        apply(&mut conn).expect("second apply");
    }
}
