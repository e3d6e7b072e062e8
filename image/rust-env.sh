# shellcheck shell=bash
# Source this before building the release binaries that go into an image:
#
#   source image/rust-env.sh && cargo build --release -p homeserver -p appliance-tools --bins
#
# It exports RUSTFLAGS and CFLAGS that rewrite the machine-specific prefixes of every path the
# compilers record (panic locations, debug info, C __FILE__ and .file names) to fixed ones:
#   this checkout          -> /outpost
#   $CARGO_HOME            -> /cargo        (the crates' unpacked sources)
#   $CARGO_TARGET_DIR      -> /target       (only when it lies outside the checkout; OUT_DIR
#                                            files of build scripts live there)
# so the binaries do not depend on where the repository was cloned, where cargo keeps its
# crates, or which target directory was used. Cargo's own -C metadata already leaves RUSTFLAGS
# out and hashes workspace paths relative to the workspace root. (`trim-paths` in a profile
# would do this, but it is still unstable on Rust 1.94 and 1.95.)
#
# tests/run.sh sources it for every workspace cargo command, so the binaries the test suite
# builds are the image's, and RUSTFLAGS stays the same for clippy, build and test (a change of
# RUSTFLAGS rebuilds every crate). image/check-reproducible.sh sources it for its second build.
# Absolute paths are resolved as the compilers see them (no symlinks left).

__outpost_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
__outpost_cargo_home=${CARGO_HOME:-$HOME/.cargo}
__outpost_cargo_home=$(cd "$__outpost_cargo_home" 2>/dev/null && pwd -P || echo "$__outpost_cargo_home")
# rustc and gcc apply the last matching mapping: the broad checkout first, then what may lie
# inside it (a CARGO_HOME or target directory under the checkout).
RUSTFLAGS="--remap-path-prefix=$__outpost_repo=/outpost --remap-path-prefix=$__outpost_cargo_home=/cargo"
CFLAGS="-ffile-prefix-map=$__outpost_repo=/outpost -ffile-prefix-map=$__outpost_cargo_home=/cargo"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
	__outpost_target=$(mkdir -p "$CARGO_TARGET_DIR" && cd "$CARGO_TARGET_DIR" && pwd -P)
	case $__outpost_target/ in
	"$__outpost_repo"/*) ;;
	*)
		RUSTFLAGS="$RUSTFLAGS --remap-path-prefix=$__outpost_target=/target"
		CFLAGS="$CFLAGS -ffile-prefix-map=$__outpost_target=/target"
		;;
	esac
fi
export RUSTFLAGS CFLAGS
unset __outpost_repo __outpost_cargo_home __outpost_target
