#!/usr/bin/env bash
# Make the output directory of another release from a test image's output, for update bundles
# (image/build-bundle.sh), without a second full image build: unpack its root filesystem, set
# the new IMAGE_VERSION (and, for a test of a broken update, replace the homeserver), pack it
# again, make its dm-verity hash tree, and put the new root hash into both slots' unified
# kernel images (the hash has a fixed length, so only the bytes of .cmdline change).
#
#   image/derive-update.sh --from DIR --out DIR --image-version V [--homeserver FILE]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FROM='' OUT='' VERSION='' HOMESERVER=''
while [ $# -gt 0 ]; do
	case "$1" in
	--from) FROM=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--image-version) VERSION=$2; shift 2 ;;
	--homeserver) HOMESERVER=$2; shift 2 ;;
	*) echo "derive-update.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
die() { echo "derive-update.sh: $*" >&2; exit 1; }
if [ -z "$FROM" ] || [ -z "$OUT" ] || [ -z "$VERSION" ]; then
	die "usage: --from DIR --out DIR --image-version V [--homeserver FILE]"
fi
[ "$(id -u)" = 0 ] || die "must run as root (file ownership in the root filesystem)"
const() { sed -n "s/^$1=//p" "$REPO/yocto-layer/meta-outpost/files/outpost-constants.conf"; }

rm -rf "$OUT"
mkdir -p "$OUT"
ROOT=$OUT/rootfs
unsquashfs -q -n -d "$ROOT" "$FROM/root-a.squashfs" >/dev/null
sed -i '/^IMAGE_VERSION=/d' "$ROOT/usr/lib/os-release"
echo "IMAGE_VERSION=$VERSION" >>"$ROOT/usr/lib/os-release"
if [ -n "$HOMESERVER" ]; then
	install -m 0755 "$HOMESERVER" "$ROOT/usr/bin/homeserver"
fi
mksquashfs "$ROOT" "$OUT/root-a.squashfs" -comp zstd -Xcompression-level 3 -b 256K \
	-noappend -quiet -no-progress >/dev/null
rm -rf "$ROOT"
veritysetup format --salt="$(const VERITY_SALT)" --uuid="$(const VERITY_UUID)" \
	--data-block-size=4096 --hash-block-size=4096 "$OUT/root-a.squashfs" "$OUT/root-a.verity" \
	>"$OUT/verity.txt"
new=$(awk -F':[ \t]*' '/^Root hash/ {print $2}' "$OUT/verity.txt")
old=$(cat "$FROM/roothash")
[ "${#new}" = "${#old}" ] || die "root hash lengths differ"
for slot in a b; do
	objcopy -O binary --only-section=.cmdline "$FROM/outpost-$slot.efi" "$OUT/cmdline-$slot"
	grep -q "$old" "$OUT/cmdline-$slot" || die "outpost-$slot.efi's command line lacks the root hash"
	sed -i "s/$old/$new/" "$OUT/cmdline-$slot"
	objcopy --update-section ".cmdline=$OUT/cmdline-$slot" "$FROM/outpost-$slot.efi" "$OUT/outpost-$slot.efi"
	rm "$OUT/cmdline-$slot"
done
echo "$new" >"$OUT/roothash"
echo "$VERSION" >"$OUT/image-version"
rm "$OUT/verity.txt"
