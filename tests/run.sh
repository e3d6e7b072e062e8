#!/usr/bin/env bash
# The whole test suite, from a fresh clone: lint, build once (release), run the unit tests,
# the black-box tests against the built binary, the Synapse interop test, the real appservice
# tests (mautrix-python, heisenbridge) and the real-client (matrix-sdk) test.
# This is the README's test command; .ci/run calls it. Everything it needs is part of the Rust
# toolchain, fetched by cargo from crates.io or by pip from PyPI, or installed below from
# Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time is printed when the next begins, and all of them at the end (CI keeps
# the log of a failed run only; a passing run's total is all it reports).
STEP_NAME='' STEP_START=$SECONDS TIMES=()
step_done() {
	[ -z "$STEP_NAME" ] || TIMES+=("$(printf '%5d s  %s' $((SECONDS - STEP_START)) "$STEP_NAME")")
}
step() {
	step_done
	STEP_NAME=$* STEP_START=$SECONDS
	printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"
}
# Builds that no early step needs run in the background at the lowest CPU and I/O priority
# (nice 19, idle I/O class), so they take only the CPU the foreground leaves idle: rustc's
# single-threaded front end of a big crate, linking, downloads, the black-box tests' waits.
# Every step on a two-core machine is CPU-bound otherwise, so this idle time is what a fresh
# run can still win. bg_wait prints a job's log where its result is needed and fails the run
# with it if the job failed.
#
# setsid makes each job a session (and process group) of its own, so that a failed run can kill
# it whole. With the kernel's autogroup scheduling (Debian's default), a session is also a
# scheduling group that competes with the foreground's as an equal whatever its processes'
# nice: without `echo 19 >/proc/self/autogroup` the "background" jobs took half the CPU, and
# clippy, the first step they ran beside, took 619 s where it had taken 332.
declare -A BG_PID=()
mkdir -p target/background
bg_start() {
	local name=$1
	shift
	setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null || true; exec nice -n 19 ionice -c 3 "$@"' \
		"$name" "$@" >"target/background/$name.log" 2>&1 &
	BG_PID[$name]=$!
}
bg_wait() {
	local name=$1
	if ! wait "${BG_PID[$name]}"; then
		cat "target/background/$name.log"
		echo "the background job '$name' failed" >&2
		exit 1
	fi
	unset "BG_PID[$name]"
	cat "target/background/$name.log"
}
report_times() {
	# A background job left running by a failed step goes with it
	# (setsid made it a process group of its own: cargo and rustc go too).
	local pid
	for pid in "${BG_PID[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
	step_done
	printf '\n==> step times (total %d s)\n' "$SECONDS"
	printf '%s\n' "${TIMES[@]}"
}
trap report_times EXIT

# Every external command the suite runs (TLS tools, Synapse's venv, the layer linters, the
# image build and qemu) is listed with its Debian package in tests/host-tools.sh. Install what a
# fresh machine lacks in one apt-get call and check every command afterwards, before any long
# stage, so a missing or removed tool fails here in seconds with its name.
step "host tools (tests/host-tools.sh)"
bash tests/host-tools.sh ensure
bash tests/host-tools.sh list

step "format"
cargo fmt --all -- --check

step "provisioning examples against their JSON schemas"
python3 provisioning/check-examples.py

# The release binaries go into the test image, which must not depend on this checkout's path,
# CARGO_HOME or target dir: the compilers record those paths remapped (see image/rust-env.sh).
# Set once here, for clippy, build and test alike (a change of RUSTFLAGS rebuilds every crate).
# shellcheck source=image/rust-env.sh
source image/rust-env.sh

# Every crate both Cargo projects use, fetched in the foreground: a background cargo must not
# hold the package cache's lock while the foreground one waits for it.
step "fetch crates (workspace and tests/client)"
cargo fetch --locked
[ ! -f tests/client/Cargo.toml ] || cargo fetch --locked --manifest-path tests/client/Cargo.toml

# The reproducibility check's second release build (image/check-reproducible.sh, its last
# image step) needs nothing the suite makes, only the sources and the fetched crates; that step
# reuses it (or builds again if the tree changed). The matrix-sdk test's debug build has its
# own target dir; its step finds it built.
bg_start second-build bash image/check-reproducible.sh --build-only --appliance target/release/appliance
[ ! -f tests/client/Cargo.toml ] ||
	bg_start client-build cargo test --no-run --locked --manifest-path tests/client/Cargo.toml

step "lint (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings

step "build (release)"
cargo build --workspace --release --all-targets

step "unit and black-box tests"
export OUTPOST_HOMESERVER="$PWD/target/release/homeserver"
cargo test --workspace --release

step "interop: a stock Synapse shares rooms both ways; matrix-nio over HTTPS (both from PyPI, pinned)"
# --workspace, as above: `-p tests` alone unifies features differently and rebuilds ~40 crates.
cargo test --release --workspace --test blackbox -- --ignored federation_synapse:: client_nio::

step "real appservices: mautrix-python's AppService, and heisenbridge to ngircd, on Outpost and Synapse"
# The PyPI venvs and ngircd are rows of tests/host-tools.sh (installed above); each scenario also
# runs against a stock Synapse, the proof its steps are right.
cargo test --release --workspace --test blackbox -- --ignored appservice_mautrix:: appservice_irc::

step "the OAuth sign-in and consent pages in headless Chromium, keyboard only, 360px wide"
# Debian's chromium is a row of tests/host-tools.sh; screenshots land in target/tmp/oauth-browser/.
cargo test --release --workspace --test blackbox -- --ignored oauth_browser::

if [ -f tests/client/Cargo.toml ]; then
  step "real-client test (matrix-sdk, its own Cargo project and lockfile)"
  # Debug profile: ~4-5 min to build (with end-to-end encryption) versus far longer optimised,
  # and the tests make few requests.
  bg_wait client-build
  cargo test --locked --manifest-path tests/client/Cargo.toml
fi

step "image: build the qemu test image, boot it under TCG, check it"
# A guest under TCG leaves about half of the two cores idle. The second build (still running
# on a fresh machine) and the layer checks, which need nothing the image tests make, take it
# meanwhile; the reproducibility check compares the two builds after the image tests.
bg_start layer-checks bash tests/image/check-layer.sh
python3 tests/image/boot-test.py --appliance target/release/appliance --no-reproducibility

step "image: signed A/B updates, rollback and Secure Boot (one guest under TCG, cold restarts)"
# Releases are derived from the image the boot test built (target/image), not built again.
python3 tests/image/update-test.py --appliance target/release/appliance

step "image: reproducible (a second checkout at another path, with its own target dir and CARGO_HOME, builds the same binaries and image)"
bg_wait second-build
bash image/check-reproducible.sh --reference target/image --homeserver target/release/homeserver \
	--appliance target/release/appliance

step "image: layer checks (crates vs Cargo.lock, units, firewall, bitbake parse, lint; ran in the background during the image tests)"
bg_wait layer-checks
