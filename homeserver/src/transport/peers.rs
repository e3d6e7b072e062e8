//! The allow-list: the peers an admin imported, one card file each under `<data_dir>/peers/`.
//!
//! Reloaded on SIGHUP (and on request from the admin socket). A card that fails to parse or
//! whose self-signature does not verify is skipped with an error in the log; the rest stay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::matrix::peer_card::PeerCard;
use crate::transport::tls::client_config_for;

/// Folder of card files inside the data dir.
pub const PEERS_DIR: &str = "peers";

/// An allow-listed peer, ready to be dialled.
pub struct Peer {
    /// Its card.
    pub card: PeerCard,
    /// TLS client configuration trusting only its CA.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Peer {
    /// The base64 public key for `key_id`, current or old.
    pub fn verify_key(&self, key_id: &str) -> Option<&str> {
        self.card
            .verify_keys
            .get(key_id)
            .map(String::as_str)
            .or_else(|| {
                self.card
                    .old_verify_keys
                    .get(key_id)
                    .map(|k| k.key.as_str())
            })
    }
}

/// The current allow-list, swapped whole on reload.
pub struct Allowlist {
    dir: PathBuf,
    own_server_name: String,
    peers: RwLock<Arc<HashMap<String, Arc<Peer>>>>,
}

impl Allowlist {
    /// Loads every card in `dir` (created if missing).
    pub fn load(dir: PathBuf, own_server_name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let list = Self {
            dir,
            own_server_name: own_server_name.to_owned(),
            peers: RwLock::new(Arc::default()),
        };
        list.reload();
        Ok(list)
    }

    /// An empty allow-list (federation disabled).
    pub fn empty(own_server_name: &str) -> Self {
        Self {
            dir: PathBuf::new(),
            own_server_name: own_server_name.to_owned(),
            peers: RwLock::new(Arc::default()),
        }
    }

    /// Re-reads the card directory; returns how many peers are allowed now.
    pub fn reload(&self) -> usize {
        let peers = read_dir(&self.dir, &self.own_server_name);
        let count = peers.len();
        if let Ok(mut current) = self.peers.write() {
            *current = Arc::new(peers);
        }
        tracing::info!(peers = count, dir = %self.dir.display(), "allow-list loaded");
        count
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<Peer>>> {
        self.peers
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_default()
    }

    /// The peer named `server_name`, if allowed.
    pub fn get(&self, server_name: &str) -> Option<Arc<Peer>> {
        self.snapshot().get(server_name).cloned()
    }

    /// Whether `server_name` is allowed.
    pub fn contains(&self, server_name: &str) -> bool {
        self.snapshot().contains_key(server_name)
    }

    /// Names of all allowed peers.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.snapshot().keys().cloned().collect();
        names.sort();
        names
    }
}

fn read_dir(dir: &Path, own: &str) -> HashMap<String, Arc<Peer>> {
    let mut peers = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return peers;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| PeerCard::parse(&text).map_err(|e| e.to_string()))
            .and_then(|card| {
                let tls = client_config_for(&card.tls).map_err(|e| e.to_string())?;
                Ok(Peer { card, tls })
            });
        match loaded {
            Ok(peer) if peer.card.server_name == own => {
                tracing::warn!(file = %path.display(), "skipping our own card in the peers folder");
            }
            Ok(peer) => {
                peers.insert(peer.card.server_name.clone(), Arc::new(peer));
            }
            Err(err) => tracing::error!(file = %path.display(), error = %err, "skipping peer card"),
        }
    }
    peers
}
