//! Python venvs of third-party test clients and servers (Synapse, matrix-nio), each pinned to
//! one PyPI release and made under `target/` on first use, so a fresh machine needs only
//! `python3-venv` (tests/host-tools.sh) and access to PyPI.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The Synapse release the interop and appservice tests are proved against (pinned so a new
/// release cannot turn CI red overnight; raise it deliberately).
pub const SYNAPSE_REQUIREMENT: &str = "matrix-synapse==1.163.2";

/// The checkout's `target/` directory, found from the running executable (a test's
/// `target/<profile>/deps/<test>` or the bench's `target/<profile>/bench`), so it holds even
/// when `$OUTPOST_HOMESERVER` names a binary elsewhere.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the executable knows its own path");
    let mut dir = exe.parent().expect("an executable lives in a directory");
    // Test executables live in target/<profile>/deps/, binaries (the bench) in target/<profile>/.
    if dir.file_name() == Some("deps".as_ref()) {
        dir = dir.parent().expect("deps/ lies in target/<profile>/");
    }
    dir.parent()
        .expect("target/<profile>/ lies in the target directory")
        .to_path_buf()
}

/// `target/<name>`, or `$override_var` when set.
fn venv_dir(name: &str, override_var: &str) -> PathBuf {
    std::env::var_os(override_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(name))
}

/// The Python of `target/synapse-venv` (or `$OUTPOST_SYNAPSE_VENV`) with
/// [`SYNAPSE_REQUIREMENT`], made on first use.
pub fn synapse_python() -> PathBuf {
    python_with(
        "synapse-venv",
        "OUTPOST_SYNAPSE_VENV",
        &[SYNAPSE_REQUIREMENT],
        "synapse",
    )
}

/// The python of the venv `target/<name>` (or `$override_var`), after making the venv and
/// installing `requirements` (pinned `dist==version` strings) if `import` does not run in it
/// yet. Panics, naming the step, when python3 -m venv or pip fails.
pub fn python_with(name: &str, override_var: &str, requirements: &[&str], import: &str) -> PathBuf {
    let venv = venv_dir(name, override_var);
    let python = venv.join("bin").join("python");
    let ready = Command::new(&python)
        .args(["-c", &format!("import {import}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        eprintln!(
            "installing {} into {}",
            requirements.join(" "),
            venv.display()
        );
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("running python3 -m venv");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
        let status = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet"])
            .args(requirements)
            .status()
            .expect("running pip");
        assert!(
            status.success(),
            "pip install {} failed",
            requirements.join(" ")
        );
    }
    python
}
