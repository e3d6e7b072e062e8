#!/usr/bin/env bash
# Sign a test image's boot chain for UEFI Secure Boot: systemd-boot (EFI/BOOT/BOOTX64.EFI) and
# both slots' unified kernel images, with the vendor's db key (sbsign, Authenticode).
#
#   image/sign-secure-boot.sh --image-dir DIR --key KEY.pem --cert CERT.pem
#
# DIR is the output of image/build-test-image.sh (or of image/derive-update.sh, which has no
# disk: then only its outpost-a.efi and outpost-b.efi). Signs outpost-a.efi and outpost-b.efi
# in place, and, when DIR has a disk, the ESP's boot loader and factory UKI, written back into
# esp.vfat and into outpost-test.img. Derive releases from an unsigned output (objcopy's edit of
# a signed UKI would void its signature). A signed output is marked with secure-boot-cert (the
# certificate's SHA-256) and is never signed twice.
#
# The firmware must hold CERT in its db (and a PK and KEK that allow it): a key the machine was
# never given, or a modified file, is refused by the firmware before any of our code runs.
# The signing key itself never enters the image.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR='' KEY='' CERT=''
while [ $# -gt 0 ]; do
	case "$1" in
	--image-dir) DIR=$2; shift 2 ;;
	--key) KEY=$2; shift 2 ;;
	--cert) CERT=$2; shift 2 ;;
	*) echo "sign-secure-boot.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
die() { echo "sign-secure-boot.sh: $*" >&2; exit 1; }
if [ -z "$DIR" ] || [ ! -f "$KEY" ] || [ ! -f "$CERT" ]; then
	die "usage: --image-dir DIR --key KEY.pem --cert CERT.pem"
fi
cert_sum=$(openssl x509 -in "$CERT" -outform DER | sha256sum | cut -d' ' -f1)
if [ -f "$DIR/secure-boot-cert" ]; then
	[ "$(cat "$DIR/secure-boot-cert")" = "$cert_sum" ] || die "$DIR is already signed with another key"
	exit 0
fi

sign() {
	sbsign --key "$KEY" --cert "$CERT" --output "$1.signed" "$1" 2>/dev/null
	mv "$1.signed" "$1"
}
for slot in a b; do
	sign "$DIR/outpost-$slot.efi"
done
if [ -f "$DIR/outpost-test.img" ]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	esp=$DIR/esp.vfat
	mcopy -i "$esp" ::EFI/BOOT/BOOTX64.EFI "$work/BOOTX64.EFI"
	sign "$work/BOOTX64.EFI"
	mcopy -o -i "$esp" -m "$work/BOOTX64.EFI" ::EFI/BOOT/BOOTX64.EFI
	mcopy -o -i "$esp" -m "$DIR/outpost-a.efi" ::EFI/Linux/outpost-1-a.efi
	start=$(python3 "$REPO/image/lib/layout.py" get esp start)
	dd if="$esp" of="$DIR/outpost-test.img" bs=1M seek=$((start / 1048576)) conv=notrunc,sparse \
		status=none
fi
echo "$cert_sum" >"$DIR/secure-boot-cert"
