//! The local admin API: HTTP+JSON on the Unix socket `<data_dir>/admin.sock`, the `appliance`
//! CLI's channel to a running server (users, status, online backup, peer list and reload).
//!
//! Who may use it is decided by the filesystem alone: the socket is mode 0660, owned by the
//! service user and the configured admin group (`[admin] socket_group`). It never listens on a
//! network port. This module owns the socket's life: created afresh at start (a stale socket
//! left by a crash is replaced), served until shutdown, removed at shutdown. [`wire`] holds the
//! bodies, shared with the CLI; the handlers follow the client API's shape (extract → one
//! service call → typed answer) and its error mapping.

mod routes;
pub mod wire;

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::AdminConfig;
use crate::service::Server;

/// The socket's file name inside the data dir.
pub const SOCKET_FILE: &str = "admin.sock";

/// How long admin requests in flight (a backup, say) may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The admin socket of the unit whose data dir is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the admin socket and serves it until `shutdown` is set; the task removes the socket
/// when it ends. Errors (the socket cannot be created, the group does not exist) are returned
/// before anything is served.
pub fn start(server: Arc<Server>, shutdown: watch::Receiver<bool>) -> io::Result<JoinHandle<()>> {
    let path = socket_path(&server.config.data_dir);
    let (listener, identity) = bind(&path, &server.config.admin)?;
    tracing::info!(socket = %path.display(), "admin API listening");
    Ok(tokio::spawn(run(
        listener, path, identity, server, shutdown,
    )))
}

/// Creates the socket under a temporary name, sets its mode and group, then renames it into
/// place, so `admin.sock` never exists with looser permissions. Returns the listener and the
/// socket file's (device, inode), so shutdown removes only our own socket.
fn bind(path: &Path, config: &AdminConfig) -> io::Result<(UnixListener, (u64, u64))> {
    let context = |what: &str, err: io::Error| {
        io::Error::new(
            err.kind(),
            format!("admin socket {}: {what}: {err}", path.display()),
        )
    };
    let gid = match &config.socket_group {
        None => None,
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|err| context("looking up the group", err.into()))?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("admin.socket_group {name:?} is not a group on this system"),
                    )
                })?
                .gid
                .as_raw(),
        ),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|err| context("removing the stale socket", err))?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(context("inspecting", err)),
    }
    let staging = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(|err| context("binding", err))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o660))
        .map_err(|err| context("setting mode 0660", err))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&staging, None, Some(gid))
            .map_err(|err| context("setting the group", err))?;
    }
    std::fs::rename(&staging, path).map_err(|err| context("moving into place", err))?;
    let meta = std::fs::symlink_metadata(path).map_err(|err| context("inspecting", err))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Serves until shutdown (plus a grace period for requests in flight), then removes the socket.
async fn run(
    listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = routes::router(server, Instant::now());
    let mut stopping = shutdown.clone();
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::util::stopped(&mut shutdown).await });
    tokio::select! {
        result = serving => {
            if let Err(err) = result {
                tracing::error!(error = %err, "admin API failed");
            }
        }
        _ = async {
            crate::util::stopped(&mut stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("admin requests still running after the grace period; stopping anyway"),
    }
    // Another instance may have replaced the socket since; only remove our own.
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && (meta.dev(), meta.ino()) == identity
    {
        let _ = std::fs::remove_file(&path);
    }
    tracing::debug!("admin API stopped");
}
