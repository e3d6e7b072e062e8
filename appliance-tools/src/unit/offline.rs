//! Running the homeserver's own storage and service code while the homeserver is stopped, so
//! offline operations (setup's first admin, user commands without a running server) behave
//! exactly as the admin socket does.

use std::future::Future;
use std::path::Path;

use homeserver::store::Store;

use crate::base::exit::{Failure, from_homeserver};

/// Opens the unit's database in `data_dir` (creating it if needed), runs `work` on it inside a
/// small runtime, and closes it cleanly (every write committed, WAL folded back).
pub fn with_store<T, F, Fut>(data_dir: &Path, work: F) -> Result<T, Failure>
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = Result<T, homeserver::error::Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::broke(format!("cannot start a runtime: {err}")))?;
    // One reader is plenty for one command.
    let store = Store::open(data_dir, 1).map_err(|err| Failure::broke(err.to_string()))?;
    let result = runtime.block_on(work(store.clone()));
    store.shutdown();
    drop(store);
    result.map_err(from_homeserver)
}
