#!/usr/bin/env bash
# Reproducibility check of the qemu test image: build it again into another directory, from an
# empty package cache, and compare, byte for byte (sha256), the disk image and every partition
# image with a reference build from the same inputs.
#
#   image/check-reproducible.sh [--reference DIR] [--homeserver BIN] [--appliance BIN]
#
# Without --reference, both builds are made here (target/image-repro/a and .../b). With it, DIR
# is an existing build (e.g. target/image from the boot test) and one more build is made.
# Exits 1 and prints the differing files when the builds differ.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$REPO/target/image-repro
REFERENCE=
HOMESERVER=$REPO/target/release/homeserver
APPLIANCE=()
while [ $# -gt 0 ]; do
	case "$1" in
	--reference) REFERENCE=$2; shift 2 ;;
	--homeserver) HOMESERVER=$2; shift 2 ;;
	--appliance) APPLIANCE=(--appliance "$2"); shift 2 ;;
	-h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "check-reproducible.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

# Both builds must see the same clock: pin it once for the whole check.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	if [ -n "$REFERENCE" ] && [ -f "$REFERENCE/source-date-epoch" ]; then
		SOURCE_DATE_EPOCH=$(cat "$REFERENCE/source-date-epoch")
	fi
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}
fi
export SOURCE_DATE_EPOCH

rm -rf "$WORK"
mkdir -p "$WORK"
if [ -z "$REFERENCE" ]; then
	REFERENCE=$WORK/a
	bash "$REPO/image/build-test-image.sh" --out "$REFERENCE" --homeserver "$HOMESERVER" "${APPLIANCE[@]}"
fi
# The second build starts from an empty package cache: files that a warm cache carries over
# must not reach the image.
OUTPOST_APT_CACHE=$WORK/apt-cache bash "$REPO/image/build-test-image.sh" --out "$WORK/b" \
	--homeserver "$HOMESERVER" "${APPLIANCE[@]}"

if cmp -s "$REFERENCE/SHA256SUMS" "$WORK/b/SHA256SUMS"; then
	echo "reproducible: two builds from the same inputs are identical"
	sed 's/^/  /' "$WORK/b/SHA256SUMS"
	rm -rf "$WORK"
	exit 0
fi
echo "NOT reproducible: the builds differ (left: $REFERENCE, right: $WORK/b)" >&2
diff "$REFERENCE/SHA256SUMS" "$WORK/b/SHA256SUMS" >&2 || true
echo "Keep both directories and compare the differing files, e.g. with diffoscope." >&2
exit 1
