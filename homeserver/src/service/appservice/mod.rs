//! Application services: the registered bridges and bots, and what the server does for them.
//!
//! This module owns the [`Registry`] — the registrations loaded from
//! `<data_dir>/appservices/*.yaml`, swapped whole on reload (SIGHUP, the admin socket) like the
//! peer allow-list — and the lookups the rest of the server asks of it: which appservice owns
//! an `as_token`, which one claims a user ID or alias exclusively, which ones are interested in
//! an ID. Parsing and checking a file is [`crate::matrix::appservice`]'s.

pub mod ephemeral;
pub mod ping;
pub mod push;
pub mod query;
pub mod thirdparty;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::matrix::appservice::{NamespaceKind, Registration};

/// The registration folder as files, for the tools that install registrations.
pub mod files;

/// Folder of registration files inside the data dir.
pub const APPSERVICES_DIR: &str = "appservices";

/// The loaded registrations, swapped whole on reload.
pub struct Registry {
    dir: PathBuf,
    server_name: String,
    current: RwLock<Arc<Vec<Arc<Registration>>>>,
}

impl Registry {
    /// Loads every `*.yaml` file in `dir` (created if missing).
    pub fn load(dir: PathBuf, server_name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let registry = Self::empty(server_name);
        let registry = Self { dir, ..registry };
        registry.reload();
        Ok(registry)
    }

    /// A registry with no appservices and no folder (unit tests, tools).
    pub fn empty(server_name: &str) -> Self {
        Self {
            dir: PathBuf::new(),
            server_name: server_name.to_owned(),
            current: RwLock::new(Arc::default()),
        }
    }

    /// Re-reads the folder and installs what it finds; returns how many appservices are
    /// registered now. A file that does not parse, or that conflicts with one loaded before it
    /// (files in name order), is skipped with an error in the log; the rest load. The server
    /// reloads through [`push::reload`], which starts new appservices' streams first.
    pub fn reload(&self) -> usize {
        self.install(self.read())
    }

    /// The registrations the folder holds now, without installing them.
    pub fn read(&self) -> Vec<Arc<Registration>> {
        read_dir(&self.dir, &self.server_name)
    }

    /// Makes `loaded` the registered set; returns how many.
    pub fn install(&self, loaded: Vec<Arc<Registration>>) -> usize {
        let count = loaded.len();
        // A writer that panicked left a whole `Arc` behind: the lock's data is still good.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        tracing::info!(appservices = count, dir = %self.dir.display(), "appservices loaded");
        count
    }

    /// Every registered appservice, in file-name order.
    pub fn all(&self) -> Arc<Vec<Arc<Registration>>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The appservice with `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<Registration>> {
        self.all().iter().find(|r| r.id == id).cloned()
    }

    /// The appservice whose `as_token` is `token`.
    pub fn by_as_token(&self, token: &str) -> Option<Arc<Registration>> {
        self.all()
            .iter()
            .find(|r| constant_time_eq(r.as_token.as_bytes(), token.as_bytes()))
            .cloned()
    }

    /// The appservice that claims `id` exclusively in its `kind` namespaces, if any.
    pub fn exclusive_owner(&self, kind: NamespaceKind, id: &str) -> Option<Arc<Registration>> {
        self.all()
            .iter()
            .find(|r| r.claims_exclusively(kind, id))
            .cloned()
    }

    /// The appservices interested in `id` (any of their `kind` namespaces matches).
    pub fn interested(&self, kind: NamespaceKind, id: &str) -> Vec<Arc<Registration>> {
        self.all()
            .iter()
            .filter(|r| r.is_interested(kind, id))
            .cloned()
            .collect()
    }

    /// Whether `user_id` is an appservice's user: its sender or in its user namespaces.
    pub fn owner_of_user(&self, user_id: &str) -> Option<Arc<Registration>> {
        self.all()
            .iter()
            .find(|r| r.may_masquerade_as(user_id, &self.server_name))
            .cloned()
    }
}

/// Compares tokens without leaking, through timing, how long a prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The registrations the folder's files give, through [`files::scan`] (the one loader, which
/// `appliance appservice` also reads), logging each file it skips.
fn read_dir(dir: &Path, server_name: &str) -> Vec<Arc<Registration>> {
    files::scan(dir, server_name)
        .into_iter()
        .filter_map(|entry| match entry.skipped {
            None => entry.registration.map(Arc::new),
            Some(reason) => {
                tracing::error!(file = %entry.path.display(), error = %reason, "skipping appservice registration");
                None
            }
        })
        .collect()
}
