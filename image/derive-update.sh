#!/usr/bin/env bash
# Make the output directory of another release from a test image's output, for update bundles
# (image/build-bundle.sh) and update tests, without a second full image build: unpack its root
# filesystem, set the new IMAGE_VERSION (and, for a test of a broken update, replace the
# homeserver; for a unit that takes updates, add the update certificate and the boot tries),
# pack it again, make its dm-verity hash tree, and put the new root hash into both slots'
# unified kernel images (the hash has a fixed length, so only the bytes of .cmdline change).
#
#   image/derive-update.sh --from DIR --out DIR --image-version V [--homeserver FILE]
#                          [--update-cert PEM] [--boot-tries N] [--disk]
#
# --update-cert and --boot-tries do what they do in build-test-image.sh (the certificate RAUC
# accepts bundles from, the tries of a newly installed slot). --disk also writes a bootable disk
# (outpost-test.img and its esp.vfat, slot A holding the new root, the data partition empty),
# from FROM's ESP and data partition images: the update test derives its factory release from
# the boot test's image this way, instead of building a second image from Debian packages.
# The root is compressed at zstd level 3 (level 15 in build-test-image.sh): a few seconds instead
# of half a minute, for a root and a bundle ~15 % larger.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAYOUT=$REPO/image/lib/layout.py
FROM='' OUT='' VERSION='' HOMESERVER='' UPDATE_CERT='' BOOT_TRIES='' DISK=0
while [ $# -gt 0 ]; do
	case "$1" in
	--from) FROM=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--image-version) VERSION=$2; shift 2 ;;
	--homeserver) HOMESERVER=$2; shift 2 ;;
	--update-cert) UPDATE_CERT=$2; shift 2 ;;
	--boot-tries) BOOT_TRIES=$2; shift 2 ;;
	--disk) DISK=1; shift ;;
	*) echo "derive-update.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
die() { echo "derive-update.sh: $*" >&2; exit 1; }
if [ -z "$FROM" ] || [ -z "$OUT" ] || [ -z "$VERSION" ]; then
	die "usage: --from DIR --out DIR --image-version V [--homeserver FILE] [--update-cert PEM] [--boot-tries N] [--disk]"
fi
[ "$(id -u)" = 0 ] || die "must run as root (file ownership in the root filesystem)"
[ -z "$UPDATE_CERT" ] || [ -f "$UPDATE_CERT" ] || die "no update certificate at $UPDATE_CERT"
if [ "$DISK" = 1 ]; then
	for f in esp.vfat data.ext4; do
		[ -f "$FROM/$f" ] || die "--disk: $FROM has no $f (built by image/build-test-image.sh)"
	done
fi
const() { sed -n "s/^$1=//p" "$REPO/yocto-layer/meta-outpost/files/outpost-constants.conf"; }
layout() { python3 "$LAYOUT" get "$@"; }

rm -rf "$OUT"
mkdir -p "$OUT"
ROOT=$OUT/rootfs
unsquashfs -q -n -d "$ROOT" "$FROM/root-a.squashfs" >/dev/null
sed -i '/^IMAGE_VERSION=/d' "$ROOT/usr/lib/os-release"
echo "IMAGE_VERSION=$VERSION" >>"$ROOT/usr/lib/os-release"
if [ -n "$HOMESERVER" ]; then
	install -m 0755 "$HOMESERVER" "$ROOT/usr/bin/homeserver"
fi
if [ -n "$UPDATE_CERT" ]; then
	install -D -m 0644 "$UPDATE_CERT" "$ROOT/etc/rauc/keyring.pem"
fi
if [ -n "$BOOT_TRIES" ]; then
	mkdir -p "$ROOT/usr/lib/outpost"
	echo "$BOOT_TRIES" >"$ROOT/usr/lib/outpost/boot-tries"
fi
mksquashfs "$ROOT" "$OUT/root-a.squashfs" -comp zstd -Xcompression-level 3 -b 256K \
	-noappend -quiet -no-progress >/dev/null
rm -rf "$ROOT"
[ "$(stat -c %s "$OUT/root-a.squashfs")" -le "$(layout root-a size)" ] || die "root filesystem larger than slot A"
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

if [ "$DISK" = 1 ]; then
	# The factory state of a unit with this release: the ESP's slot A kernel image replaced,
	# slot B empty, the data partition as built (empty ext4), the partition table of the layer.
	cp "$FROM/esp.vfat" "$OUT/esp.vfat"
	mcopy -o -i "$OUT/esp.vfat" -m "$OUT/outpost-a.efi" ::EFI/Linux/outpost-1-a.efi
	disk=$OUT/outpost-test.img
	truncate -s "$(layout disk size)" "$disk"
	python3 "$LAYOUT" sfdisk | sfdisk --quiet --no-reread --no-tell-kernel "$disk"
	put() { dd if="$2" of="$disk" bs=1M seek=$(( $(layout "$1" start) / 1048576 )) conv=notrunc,sparse status=none; }
	put esp "$OUT/esp.vfat"
	put root-a "$OUT/root-a.squashfs"
	put root-a-verity "$OUT/root-a.verity"
	put data "$FROM/data.ext4"
	python3 "$LAYOUT" check "$disk"
fi
