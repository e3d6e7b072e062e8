#!/usr/bin/env bash
# Make a signed RAUC update bundle (verity format) from a test image's output directory.
#
#   image/build-bundle.sh --image-dir DIR --cert PEM --key PEM --out FILE
#
# The bundle holds the root filesystem (root-a.squashfs, for whichever slot is inactive: both
# slots take the same bytes), its dm-verity hash tree and the unified kernel image of each slot
# (outpost-a.efi, outpost-b.efi: each names its own slot's partitions and the root hash). Its
# compatible string is the one of recipes-core/rauc/files/system.conf, its version the image's
# (DIR/image-version). The key signs; the unit's keyring holds only the certificate. Keys are
# never part of the repository: the tests make throw-away ones, a release uses the vendor's.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_DIR='' CERT='' KEY='' OUT=''
while [ $# -gt 0 ]; do
	case "$1" in
	--image-dir) IMAGE_DIR=$2; shift 2 ;;
	--cert) CERT=$2; shift 2 ;;
	--key) KEY=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	*) echo "build-bundle.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
die() { echo "build-bundle.sh: $*" >&2; exit 1; }
if [ -z "$IMAGE_DIR" ] || [ -z "$CERT" ] || [ -z "$KEY" ] || [ -z "$OUT" ]; then
	die "usage: --image-dir DIR --cert PEM --key PEM --out FILE"
fi
for f in root-a.squashfs root-a.verity outpost-a.efi outpost-b.efi image-version; do
	[ -f "$IMAGE_DIR/$f" ] || die "$IMAGE_DIR has no $f (built by image/build-test-image.sh)"
done
compatible=$(sed -n 's/^compatible=//p' "$REPO/yocto-layer/meta-outpost/recipes-core/rauc/files/system.conf")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/content"
cp "$IMAGE_DIR/root-a.squashfs" "$WORK/content/root.squashfs"
# RAUC picks the update handler by file name: a raw slot takes *.img (and *.squashfs).
cp "$IMAGE_DIR/root-a.verity" "$WORK/content/root-verity.img"
cp "$IMAGE_DIR/outpost-a.efi" "$IMAGE_DIR/outpost-b.efi" "$WORK/content/"
cat >"$WORK/content/manifest.raucm" <<MANIFEST
[update]
compatible=$compatible
version=$(cat "$IMAGE_DIR/image-version")

[bundle]
format=verity

[image.rootfs]
filename=root.squashfs

[image.verity]
filename=root-verity.img
MANIFEST
rm -f "$OUT"
rauc bundle --cert="$CERT" --key="$KEY" "$WORK/content" "$OUT" >/dev/null
echo "$OUT: $(du -h --apparent-size "$OUT" | cut -f1)"
