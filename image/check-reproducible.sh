#!/usr/bin/env bash
# Reproducibility check of the qemu test image, as an installer would rebuild it elsewhere: a
# second checkout of the same sources at another path, with its own target directory and its
# own CARGO_HOME, builds the release binaries again and then the image, from an empty package
# cache; its stripped binaries, the disk image and every partition image must equal, byte for
# byte (sha256), those of the reference build.
#
#   image/check-reproducible.sh [--reference DIR] [--homeserver BIN] [--appliance BIN]
#   image/check-reproducible.sh --build-only [--appliance BIN]
#
# The reference binaries (BIN, default target/release/homeserver) must have been built in this
# checkout after `source image/rust-env.sh` (tests/run.sh does). Without --reference, the
# reference image is built here too (target/image-repro/a); with it, DIR is an existing build
# (e.g. target/image from the boot test). The second checkout is a copy of this working tree
# (tracked and untracked-but-not-ignored files: in CI, HEAD) under target/image-repro/checkout;
# its CARGO_HOME holds a copy of this one's crate index and downloaded .crate files only, so the
# crates are unpacked again at another path and nothing is fetched. Only the binaries' packages
# are built there (-p homeserver [-p appliance-tools] --bins).
# Exits 1 and prints what differs; keeps target/image-repro for a closer look (diffoscope).
#
# --build-only makes the second checkout and its release build, and stops. A later check
# reuses that build when the files it would copy are the same, byte for byte and with the
# same times (a tar of them hashes the same): tests/run.sh starts it in the background at the
# lowest priority before its clippy step, so it uses the CPU the other steps leave idle, and
# runs the comparison (--reference target/image) after its image tests.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$REPO/target/image-repro
REFERENCE=
HOMESERVER=$REPO/target/release/homeserver
APPLIANCE=
BUILD_ONLY=
while [ $# -gt 0 ]; do
	case "$1" in
	--reference) REFERENCE=$2; shift 2 ;;
	--homeserver) HOMESERVER=$2; shift 2 ;;
	--appliance) APPLIANCE=$2; shift 2 ;;
	--build-only) BUILD_ONLY=1; shift ;;
	-h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "check-reproducible.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }

# Both builds must see the same clock: pin it once for the whole check.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	if [ -n "$REFERENCE" ] && [ -f "$REFERENCE/source-date-epoch" ]; then
		SOURCE_DATE_EPOCH=$(cat "$REFERENCE/source-date-epoch")
	fi
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}
fi
export SOURCE_DATE_EPOCH

# --- the second checkout, its CARGO_HOME, its build ------------------------------------------
CHECKOUT=$WORK/checkout
CARGO_HOME_1=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
CARGO_HOME_2=$WORK/cargo-home
packages=(-p homeserver)
[ -z "$APPLIANCE" ] || packages+=(-p appliance-tools)
# What the second checkout holds: this working tree's tracked and untracked-but-not-ignored
# files (in CI, HEAD), as one tar; its hash and the packages name a build that can be reused.
mkdir -p "$WORK"
TREE=$WORK/tree.tar
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar -cf - --null -T -) >"$TREE"
KEY="$(sha256sum <"$TREE" | cut -d' ' -f1) ${packages[*]}"
if [ -f "$WORK/build.key" ] && [ "$(cat "$WORK/build.key")" = "$KEY" ]; then
	log "second release build: reused, made earlier ($(cat "$WORK/build-seconds") s)"
	find "$WORK" -mindepth 1 -maxdepth 1 ! -name checkout ! -name cargo-home ! -name build.key \
		! -name build-seconds -exec rm -rf {} +
else
	find "$WORK" -mindepth 1 -maxdepth 1 ! -name tree.tar -exec rm -rf {} +
	log "second checkout at $CHECKOUT, CARGO_HOME $CARGO_HOME_2"
	mkdir -p "$CHECKOUT" "$CARGO_HOME_2/registry"
	tar -xf "$TREE" -C "$CHECKOUT"
	rm -f "$TREE"
	cp -a "$CARGO_HOME_1/registry/index" "$CARGO_HOME_1/registry/cache" "$CARGO_HOME_2/registry/"
	start=$(date +%s)
	(
		cd "$CHECKOUT"
		export CARGO_HOME=$CARGO_HOME_2
		unset CARGO_TARGET_DIR
		# shellcheck disable=SC1091 # the second checkout's image/rust-env.sh, the same file
		source image/rust-env.sh
		nice cargo build --quiet --release --offline --locked "${packages[@]}" --bins
	)
	echo $(($(date +%s) - start)) >"$WORK/build-seconds"
	echo "$KEY" >"$WORK/build.key"
	log "second release build: $(cat "$WORK/build-seconds") s"
fi
rm -f "$TREE"
[ -z "$BUILD_ONLY" ] || exit 0

if [ -z "$REFERENCE" ]; then
	REFERENCE=$WORK/a
	bash "$REPO/image/build-test-image.sh" --out "$REFERENCE" --homeserver "$HOMESERVER" \
		${APPLIANCE:+--appliance "$APPLIANCE"}
fi

# --- the binaries, stripped as the image strips them ------------------------------------------
differ=0
compare_bin() {
	local name=$1 one=$2 two=$3 a b
	strip --strip-debug -o "$WORK/$name.1" "$one"
	strip --strip-debug -o "$WORK/$name.2" "$two"
	a=$(sha256sum <"$WORK/$name.1" | cut -d' ' -f1)
	b=$(sha256sum <"$WORK/$name.2" | cut -d' ' -f1)
	echo "  $name (stripped): $a here, $b in the second checkout"
	if [ "$a" != "$b" ]; then
		differ=1
		echo "NOT reproducible: $name differs between the two checkouts" >&2
		if grep -qF "$REPO" "$one"; then
			echo "  $one names this checkout's path: was it built after 'source image/rust-env.sh'?" >&2
		fi
	fi
}
compare_bin homeserver "$HOMESERVER" "$CHECKOUT/target/release/homeserver"
[ -z "$APPLIANCE" ] || compare_bin appliance "$APPLIANCE" "$CHECKOUT/target/release/appliance"

# --- the image, built by the second checkout's script from its binaries -----------------------
# The second build starts from an empty package cache: files that a warm cache carries over
# must not reach the image.
OUTPOST_APT_CACHE=$WORK/apt-cache bash "$CHECKOUT/image/build-test-image.sh" --out "$WORK/b" \
	--homeserver "$CHECKOUT/target/release/homeserver" \
	${APPLIANCE:+--appliance "$CHECKOUT/target/release/appliance"}

if [ "$differ" = 0 ] && cmp -s "$REFERENCE/SHA256SUMS" "$WORK/b/SHA256SUMS"; then
	echo "reproducible: two checkouts, two target dirs, two CARGO_HOMEs, identical binaries and images"
	sed 's/^/  /' "$WORK/b/SHA256SUMS"
	rm -rf "$WORK"
	exit 0
fi
echo "NOT reproducible: the builds differ (left: $REFERENCE, right: $WORK/b)" >&2
diff "$REFERENCE/SHA256SUMS" "$WORK/b/SHA256SUMS" >&2 || true
if [ -f "$REFERENCE/packages" ] && ! cmp -s "$REFERENCE/packages" "$WORK/b/packages"; then
	echo "The Debian packages differ (the mirror published updates in between):" >&2
	diff "$REFERENCE/packages" "$WORK/b/packages" >&2 || true
fi
echo "Keep both directories and compare the differing files, e.g. with diffoscope." >&2
exit 1
