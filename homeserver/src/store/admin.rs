//! What the local admin API and the `appliance` CLI need from the database: user summaries and
//! the admin flag, counts, the integrity check, and the online backup.
//!
//! Backups use SQLite's backup API from a dedicated read-only connection that holds one read
//! transaction for the whole copy: in WAL mode that snapshot never blocks the writer, and
//! because it is one snapshot the copy is consistent even while clients keep writing (the
//! backup is never restarted by concurrent commits). The functions here are synchronous; the
//! server calls them on the blocking pool, the CLI calls them directly when the server is
//! stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Pages copied per backup step: 1024 pages of 4 KiB is 4 MiB between progress reports.
const BACKUP_PAGES_PER_STEP: i32 = 1024;

/// One local account as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    /// The full Matrix user ID.
    pub user_id: String,
    /// Whether the account is a server admin.
    pub admin: bool,
    /// Whether the account was deactivated (it can no longer log in).
    pub deactivated: bool,
    /// When the account was created, in milliseconds since the Unix epoch.
    pub created_ts: i64,
    /// Number of logged-in devices (sessions).
    pub devices: u64,
}

fn user_summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserSummary> {
    Ok(UserSummary {
        user_id: row.get(0)?,
        admin: row.get(1)?,
        deactivated: row.get(2)?,
        created_ts: row.get(3)?,
        devices: row.get(4)?,
    })
}

/// Every local account, sorted by user ID.
pub fn list_users(conn: &Connection) -> Result<Vec<UserSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.user_id, u.is_admin, u.deactivated, u.created_ts,
                (SELECT count(*) FROM devices d WHERE d.user_id = u.user_id)
         FROM users u ORDER BY u.user_id",
    )?;
    let rows = stmt.query_map([], user_summary)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One account, `None` if it does not exist.
pub fn get_user(conn: &Connection, user_id: &str) -> Result<Option<UserSummary>> {
    Ok(conn
        .query_row(
            "SELECT u.user_id, u.is_admin, u.deactivated, u.created_ts,
                    (SELECT count(*) FROM devices d WHERE d.user_id = u.user_id)
             FROM users u WHERE u.user_id = ?1",
            params![user_id],
            user_summary,
        )
        .optional()?)
}

/// Sets or clears the admin flag; `Ok(false)` if the user does not exist.
pub fn set_admin(conn: &Connection, user_id: &str, admin: bool) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET is_admin = ?2 WHERE user_id = ?1",
        params![user_id, admin],
    )? == 1)
}

/// Number of accounts that are not deactivated.
pub fn count_active_users(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM users WHERE deactivated = 0",
        [],
        |row| row.get(0),
    )?)
}

/// Number of rooms this unit knows.
pub fn count_rooms(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT count(*) FROM rooms", [], |row| row.get(0))?)
}

/// The schema version (`PRAGMA user_version`, the number of the last applied migration).
pub fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Runs `PRAGMA quick_check` and returns `"ok"` or SQLite's findings, one per line.
pub fn quick_check(conn: &Connection) -> Result<String> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let findings = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(findings.join("\n"))
}

/// Opens a database file read-only, for checks and backups that must not take the writer's
/// place. Fails if the file does not exist (it is never created here).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A checkpoint in progress makes opening a read transaction wait briefly, not fail.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// How far a backup has got.
#[derive(Debug, Clone, Copy)]
pub struct BackupProgress {
    /// Pages copied so far.
    pub copied_pages: u64,
    /// Pages in the snapshot being copied.
    pub total_pages: u64,
}

/// What a finished backup produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// Size of the copy in bytes.
    pub size_bytes: u64,
    /// Pages copied.
    pub pages: u64,
    /// Wall-clock time the copy took, in milliseconds.
    pub duration_ms: u64,
}

/// Copies the database at `source` into a new file `dest` (which must not exist), consistently
/// and without blocking the writer, calling `progress` after each step.
///
/// On failure the partial `dest` is removed.
pub fn backup(
    source: &Path,
    dest: &Path,
    mut progress: impl FnMut(BackupProgress),
) -> Result<BackupOutcome> {
    let started = Instant::now();
    // Claim the name first so an existing file is never overwritten.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|err| Error::internal(format!("cannot create {}: {err}", dest.display())))?;
    let result = (|| {
        let src = open_read_only(source)?;
        let mut dst = Connection::open(dest)?;
        // One read transaction for the whole copy: every step sees the same snapshot.
        src.execute_batch("BEGIN DEFERRED")?;
        src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        let pages = {
            let copy = Backup::new(&src, &mut dst)?;
            loop {
                let step = copy.step(BACKUP_PAGES_PER_STEP)?;
                let state = copy.progress();
                let total = u64::try_from(state.pagecount).unwrap_or(0);
                let remaining = u64::try_from(state.remaining).unwrap_or(0);
                progress(BackupProgress {
                    copied_pages: total.saturating_sub(remaining),
                    total_pages: total,
                });
                match step {
                    StepResult::Done => break total,
                    StepResult::More => {}
                    // Only a checkpoint in progress can hold us up, briefly: we only read, and
                    // in WAL mode the writer never locks readers out.
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        };
        src.execute_batch("COMMIT")?;
        // The copy is a standalone file: no WAL beside it.
        dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        dst.close().map_err(|(_, err)| err)?;
        let size_bytes = std::fs::metadata(dest)
            .map_err(|err| Error::internal(format!("{}: {err}", dest.display())))?
            .len();
        Ok(BackupOutcome {
            size_bytes,
            pages,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// A content report a user filed, as the admin sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Report number, in filing order.
    pub id: i64,
    /// Who filed it.
    pub reporter: String,
    /// `event`, `room` or `user`.
    pub kind: String,
    /// The room reported, or the room of the reported event.
    pub room_id: Option<String>,
    /// The reported event.
    pub event_id: Option<String>,
    /// The reported user (for an event report, the event's sender).
    pub target_user: Option<String>,
    /// The reporter's words (may be empty).
    pub reason: String,
    /// When it was filed (ms since the epoch).
    pub created_ts: i64,
}

/// Files a report.
pub fn add_report(conn: &Connection, report: &Report) -> Result<()> {
    conn.execute(
        "INSERT INTO reports (reporter, kind, room_id, event_id, target_user, reason, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            report.reporter,
            report.kind,
            report.room_id,
            report.event_id,
            report.target_user,
            report.reason,
            report.created_ts
        ],
    )?;
    Ok(())
}

/// Every report, oldest first.
pub fn reports(conn: &Connection) -> Result<Vec<Report>> {
    let mut stmt = conn.prepare(
        "SELECT id, reporter, kind, room_id, event_id, target_user, reason, created_ts
         FROM reports ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Report {
            id: r.get(0)?,
            reporter: r.get(1)?,
            kind: r.get(2)?,
            room_id: r.get(3)?,
            event_id: r.get(4)?,
            target_user: r.get(5)?,
            reason: r.get(6)?,
            created_ts: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
