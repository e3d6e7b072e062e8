//! The registration folder as files: what `<data_dir>/appservices/` holds, and a new file
//! checked against it before it is written.
//!
//! Shared by `appliance appservice add|list|remove`, `appliance status` and `homeserver dev
//! --appservice`, so every tool judges a folder as the server's loader ([`super::Registry`])
//! does: `*.yaml` and `*.yml` files in name order, each parsed with [`Registration::parse`] and
//! checked with [`check_set`] against the files loaded before it; a file that fails is
//! skipped, the rest load.
//!
//! A tool writes a registration as `<id>.yaml`, so the id must be usable as a file name: ASCII
//! letters, digits, `.`, `_` and `-`, not starting with a dot (bridges use ids like `irc` or
//! `telegram`). A stricter rule than the server's, which loads any file name, so the tools
//! never write outside the folder or over a file that is not the id's.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::matrix::appservice::{Registration, RegistrationError, check_set};

/// The longest id a tool writes a file for.
const MAX_ID_LEN: usize = 100;

/// One file of the folder as the loader sees it.
#[derive(Debug)]
pub struct Entry {
    /// The file.
    pub path: PathBuf,
    /// The registration, when the file parses (also when it is skipped for a conflict).
    pub registration: Option<Registration>,
    /// Why the server skips the file; `None` when it loads it.
    pub skipped: Option<String>,
}

impl Entry {
    /// The registration, when the server loads this file.
    pub fn loaded(&self) -> Option<&Registration> {
        self.registration
            .as_ref()
            .filter(|_| self.skipped.is_none())
    }
}

/// Every registration file in `dir` in load order, with what the loader makes of it; none when
/// the folder does not exist.
pub fn scan(dir: &Path, server_name: &str) -> Vec<Entry> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), ?err, "cannot list the appservice folder: no appservice is loaded from it");
            Vec::new()
        }
    };
    paths.sort();
    let mut entries: Vec<Entry> = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot be read: {err}"))
            .and_then(|text| Registration::parse(&text, server_name).map_err(|e| e.to_string()));
        let entry = match parsed {
            Ok(registration) => {
                let before = entries.iter().filter_map(Entry::loaded);
                let skipped = check_set(before.chain([&registration]))
                    .err()
                    .map(|err| format!("conflicts with a file loaded before it: {err}"));
                Entry {
                    path,
                    registration: Some(registration),
                    skipped,
                }
            }
            Err(reason) => Entry {
                path,
                registration: None,
                skipped: Some(reason),
            },
        };
        entries.push(entry);
    }
    entries
}

/// The file name a tool writes the registration `id` under (`<id>.yaml`), or why it cannot.
pub fn file_name(id: &str) -> Result<String, RegistrationError> {
    let usable = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if usable {
        Ok(format!("{id}.yaml"))
    } else {
        Err(RegistrationError {
            field: "id".to_owned(),
            reason: format!(
                "{id:?} cannot name its file: use at most {MAX_ID_LEN} ASCII letters, digits, \
                 '.', '_' or '-', not starting with '.'"
            ),
        })
    }
}

/// Why a new registration file is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file is wrong, or conflicts with a registration that stays (the field says where).
    Invalid(RegistrationError),
    /// A registration with this id is installed (in `path`) and replacing was not asked for.
    Exists {
        /// The id.
        id: String,
        /// The file that holds it now.
        path: PathBuf,
    },
}

/// A new registration file that passed every check, and where it goes.
#[derive(Debug)]
pub struct Checked {
    /// The registration.
    pub registration: Registration,
    /// `<dir>/<id>.yaml`.
    pub path: PathBuf,
    /// Other files holding the same id, which installing it removes.
    pub replaces: Vec<PathBuf>,
}

/// Checks `yaml` as a new file for the folder `dir` holding `existing` (from [`scan`]): it
/// parses, its id names a file, no installed registration has its id (unless `replace`; the
/// one it replaces is then left out of the checks), and it passes [`check_set`] with the
/// registrations that stay plus `pending` (others being installed in the same step, which it
/// also may not replace). Reads and writes nothing.
pub fn check_new(
    dir: &Path,
    existing: &[Entry],
    pending: &[&Registration],
    yaml: &str,
    server_name: &str,
    replace: bool,
) -> Result<Checked, Refusal> {
    let registration = Registration::parse(yaml, server_name).map_err(Refusal::Invalid)?;
    let name = file_name(&registration.id).map_err(Refusal::Invalid)?;
    let path = dir.join(&name);
    let same_id = |entry: &Entry| {
        entry.path == path
            || entry
                .registration
                .as_ref()
                .is_some_and(|other| other.id == registration.id)
    };
    let replaced: Vec<&Entry> = existing.iter().filter(|entry| same_id(entry)).collect();
    if let Some(first) = replaced.first()
        && !replace
    {
        return Err(Refusal::Exists {
            id: registration.id.clone(),
            path: first.path.clone(),
        });
    }
    let staying = existing
        .iter()
        .filter(|entry| !same_id(entry))
        .filter_map(Entry::loaded)
        .filter(|other| pending.iter().all(|new| new.id != other.id));
    check_set(
        staying
            .chain(pending.iter().copied())
            .chain([&registration]),
    )
    .map_err(Refusal::Invalid)?;
    let replaces = replaced
        .iter()
        .map(|entry| entry.path.clone())
        .filter(|other| *other != path)
        .collect();
    Ok(Checked {
        registration,
        path,
        replaces,
    })
}

/// Writes `bytes` to `path` atomically with mode 0600 (the file holds both tokens): written and
/// fsynced as `.<name>.tmp` (which the loader does not read), renamed over `path`, and the
/// folder fsynced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(id: &str, users: &str) -> String {
        format!(
            "id: {id}\nurl: null\nas_token: as-{id}\nhs_token: hs-{id}\nsender_localpart: \
             {id}bot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '{users}'\n"
        )
    }

    fn entry(dir: &Path, id: &str, users: &str) -> Entry {
        Entry {
            path: dir.join(format!("{id}.yaml")),
            registration: Some(Registration::parse(&yaml(id, users), "u").expect("parses")),
            skipped: None,
        }
    }

    #[test]
    fn ids_that_cannot_name_a_file_are_refused() {
        assert_eq!(file_name("irc-2.b_c").as_deref(), Ok("irc-2.b_c.yaml"));
        for bad in ["", ".hidden", "a/b", "..", "é", &"x".repeat(101)] {
            assert_eq!(file_name(bad).expect_err(bad).field, "id");
        }
    }

    #[test]
    fn a_new_file_is_checked_against_what_stays() {
        let dir = Path::new("/d");
        let existing = [entry(dir, "irc", "@irc_.*")];
        let checked = check_new(dir, &existing, &[], &yaml("mail", "@mail_.*"), "u", false)
            .expect("disjoint");
        assert_eq!(checked.path, dir.join("mail.yaml"));
        let refusal = check_new(dir, &existing, &[], &yaml("irc", "@irc_.*"), "u", false)
            .expect_err("same id");
        assert!(matches!(refusal, Refusal::Exists { ref id, .. } if id == "irc"));
        // Replacing leaves the old copy out of the overlap and token checks.
        check_new(dir, &existing, &[], &yaml("irc", "@irc_.*"), "u", true).expect("replaced");
        let refusal = check_new(dir, &existing, &[], &yaml("irc2", "@irc_x.*"), "u", true)
            .expect_err("overlap");
        assert!(
            matches!(refusal, Refusal::Invalid(ref err) if err.field == "namespaces.users[0].regex")
        );
        let pending = Registration::parse(&yaml("sms", "@sms_.*"), "u").expect("parses");
        let refusal = check_new(
            dir,
            &existing,
            &[&pending],
            &yaml("sms", "@sms_.*"),
            "u",
            true,
        )
        .expect_err("same id twice in one step");
        assert!(matches!(refusal, Refusal::Invalid(ref err) if err.field == "id"));
    }

    #[test]
    fn a_file_named_for_the_id_counts_as_that_id_even_when_broken() {
        let dir = Path::new("/d");
        let broken = Entry {
            path: dir.join("irc.yaml"),
            registration: None,
            skipped: Some("does not parse".to_owned()),
        };
        let refusal = check_new(dir, &[broken], &[], &yaml("irc", "@irc_.*"), "u", false)
            .expect_err("file present");
        assert!(matches!(refusal, Refusal::Exists { .. }));
    }
}
