#!/usr/bin/env bash
# Build the Outpost qemu test image: a small x86-64 UEFI disk from Debian bookworm packages with
# our release binaries, laid out exactly like the production image.
#
#   image/build-test-image.sh [--out DIR] [--homeserver BIN] [--appliance BIN] [--no-apt]
#                             [--update-cert PEM] [--image-version V] [--boot-tries N]
#       (the appliance CLI goes into the image only when --appliance is given; --update-cert
#       is the public certificate RAUC accepts update bundles from; V defaults to
#       SOURCE_DATE_EPOCH; N, the boot tries of a newly installed slot, defaults to the
#       layer's 3)
#   image/build-test-image.sh --input-key      print the hash of every input, build nothing
#
# What comes from the Yocto layer (yocto-layer/meta-outpost), so both images share it:
#   - the partition table          files/wic/outpost.wks.in (read through image/lib/layout.py)
#   - systemd-boot's loader.conf   files/wic/outpost-loader.conf
#   - kernel command line, ports, verity salt   files/outpost-constants.conf
#   - units, sysusers, tmpfiles (the /data layout), nftables template, network, admin shell
#                                  recipes-core/outpost-base/files/rootfs/ (copied as a tree)
#   - the initramfs /init          recipes-core/outpost-initramfs/files/init
# What is Debian's: the packages, the kernel (its modules loaded by the initramfs), busybox.
# What is test-only: image/test-image/ (a report of the unit's state on the second serial port).
#
# Output in DIR (default target/image): outpost-test.img (raw GPT disk), the partition images,
# SHA256SUMS, roothash, input-key, source-date-epoch and packages (the Debian versions used). With the same inputs and the same
# Debian packages, two builds give the same bytes: SOURCE_DATE_EPOCH (default: the last
# commit's time) is the only clock, every UUID and salt is fixed, and the PE header of the
# unified kernel image gets SOURCE_DATE_EPOCH instead of objcopy's wall-clock time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAYER=$REPO/yocto-layer/meta-outpost
LAYOUT=$REPO/image/lib/layout.py
OUT=$REPO/target/image
HOMESERVER=$REPO/target/release/homeserver
APPLIANCE=
UPDATE_CERT=
IMAGE_VERSION=
BOOT_TRIES=
APT_INSTALL=1
PRINT_KEY=0
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--out) OUT=$2; shift 2 ;;
	--homeserver) HOMESERVER=$2; shift 2 ;;
	--appliance) APPLIANCE=$2; shift 2 ;;
	--update-cert) UPDATE_CERT=$2; shift 2 ;;
	--image-version) IMAGE_VERSION=$2; shift 2 ;;
	--boot-tries) BOOT_TRIES=$2; shift 2 ;;
	--no-apt) APT_INSTALL=0; shift ;;
	--input-key) PRINT_KEY=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "build-test-image.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "build-test-image.sh: $*" >&2; exit 1; }

[ -x "$HOMESERVER" ] || die "no homeserver binary at $HOMESERVER (cargo build --release -p homeserver)"
[ -z "$APPLIANCE" ] || [ -x "$APPLIANCE" ] || die "no appliance binary at $APPLIANCE"
[ -z "$UPDATE_CERT" ] || [ -f "$UPDATE_CERT" ] || die "no update certificate at $UPDATE_CERT"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1767225600)
fi
export SOURCE_DATE_EPOCH
IMAGE_VERSION=${IMAGE_VERSION:-$SOURCE_DATE_EPOCH}
export TZ=UTC LC_ALL=C.UTF-8

# Everything the image is made from, hashed: when this key is unchanged an existing image can be
# reused (the Debian packages are not part of it; a rebuild picks up their latest versions).
input_key() {
	{
		echo "sde=$SOURCE_DATE_EPOCH suite=$SUITE version=$IMAGE_VERSION tries=$BOOT_TRIES"
		sha256sum "$HOMESERVER" ${APPLIANCE:+"$APPLIANCE"} ${UPDATE_CERT:+"$UPDATE_CERT"} | awk '{print $1}'
		(cd "$REPO" && find image/build-test-image.sh image/lib image/test-image \
			yocto-layer/meta-outpost/files yocto-layer/meta-outpost/recipes-core \
			-type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum)
	} | sha256sum | awk '{print $1}'
}
if [ "$PRINT_KEY" = 1 ]; then
	input_key
	exit 0
fi

START=$(date +%s)

# --- host tools -----------------------------------------------------------------------------
# The commands this script runs are listed, with their packages, in tests/host-tools.sh.
if [ "$APT_INSTALL" = 1 ]; then
	bash "$REPO/tests/host-tools.sh" ensure build || die "host tools missing (see above)"
else
	bash "$REPO/tests/host-tools.sh" check build || die "host tools missing (see above)"
fi
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, device-independent file ownership)"

const() { sed -n "s/^$1=//p" "$LAYER/files/outpost-constants.conf"; }
CLIENT_PORT=$(const CLIENT_PORT)
FEDERATION_PORT=$(const FEDERATION_PORT)
VERITY_SALT=$(const VERITY_SALT)
VERITY_UUID=$(const VERITY_UUID)
KERNEL_CMDLINE=$(const KERNEL_CMDLINE)
layout() { python3 "$LAYOUT" get "$@"; }

WORK=$OUT/work
rm -rf "$OUT"
mkdir -p "$WORK"
# Downloaded .debs are kept between builds; they never change what ends up in the image.
CACHE=${OUTPOST_APT_CACHE:-$REPO/target/image-cache/apt}
mkdir -p "$CACHE"

# --- root filesystem --------------------------------------------------------------------------
# Kernel modules: only the drivers this machine needs, the rest of the kernel package is never
# unpacked. Initramfs: virtio disk, dm-verity, squashfs. Root: network, ext4 (/data), FAT
# (ESP, PROVISION disk), nftables, the ACPI power button (+ evdev for logind), virtio-rng, loop
# (RAUC opens an update bundle through a loop device).
MODULE_DIRS="drivers/virtio drivers/block/virtio_blk.ko drivers/block/loop.ko drivers/md drivers/net/virtio_net.ko
drivers/net/net_failover.ko net/core drivers/char/hw_random drivers/acpi/button.ko
drivers/input/evdev.ko fs/squashfs fs/ext4 fs/jbd2 fs/mbcache.ko fs/fat fs/nls fs/efivarfs
net/netfilter net/ipv4/netfilter net/ipv6/netfilter lib crypto arch/x86/crypto"
INITRAMFS_MODULES="virtio_pci virtio_blk virtio_rng dm_verity squashfs"
dpkg_filters=(
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
	--dpkgopt='path-exclude=/lib/modules/*/kernel/*'
)
for m in $MODULE_DIRS; do
	case "$m" in
	*.ko) dpkg_filters+=(--dpkgopt="path-include=/lib/modules/*/kernel/$m") ;;
	*) dpkg_filters+=(--dpkgopt="path-include=/lib/modules/*/kernel/$m/*") ;;
	esac
done

ROOT=$WORK/rootfs
log "mmdebstrap $SUITE (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap in its hooks
mmdebstrap --mode=root --variant=essential --architecture=amd64 --quiet \
	--aptopt='APT::Install-Recommends "false"' \
	--include=systemd,systemd-sysv,udev,dbus,kmod,nftables,cryptsetup-bin,busybox-static,linux-image-amd64,rauc \
	"${dpkg_filters[@]}" \
	--setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
	--setup-hook="sync-in '$CACHE' /var/cache/apt/archives" \
	--customize-hook="sync-out /var/cache/apt/archives '$CACHE'" \
	"$SUITE" "$ROOT" \
	"deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main"

KVER=$(basename "$(ls -d "$ROOT"/lib/modules/*)")
# The Debian package versions the image is made of: what a rebuild must get again (the mirror
# is live, see image/README.md), so a rebuild can tell a package update from a real difference.
# shellcheck disable=SC2016 # dpkg-query's format, not shell
dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' | sort >"$OUT/packages"
log "kernel $KVER"

# Our files, from the layer, exactly as the Yocto recipe installs them.
DATA_PARTUUID=$(layout data uuid)
subst() {
	sed -e "s/@CLIENT_PORT@/$CLIENT_PORT/g" -e "s/@FEDERATION_PORT@/$FEDERATION_PORT/g" \
		-e "s/@DATA_PARTUUID@/$DATA_PARTUUID/g" "$1"
}
(cd "$LAYER/recipes-core/outpost-base/files/rootfs" && find . -type f | sort) | while read -r f; do
	src=$LAYER/recipes-core/outpost-base/files/rootfs/$f
	dst=$ROOT/${f%.in}
	mode=0644
	[ -x "$src" ] && mode=0755
	mkdir -p "$(dirname "$dst")"
	case "$f" in
	*.in)
		subst "$src" >"$dst"
		chmod "$mode" "$dst"
		! grep -n '@[A-Z_]*@' "$dst" || die "unsubstituted @VARIABLE@ in $f"
		;;
	*) install -m "$mode" "$src" "$dst" ;;
	esac
done
# Mount point of the data partition (the root is read-only at run time).
mkdir -p "$ROOT/data"
# (A test may pass a script as the homeserver: an update whose homeserver cannot start.)
if [ "$(head -c 4 "$HOMESERVER")" = "$(printf '\177ELF')" ]; then
	strip --strip-debug -o "$ROOT/usr/bin/homeserver" "$HOMESERVER"
else
	install -m 0755 "$HOMESERVER" "$ROOT/usr/bin/homeserver"
fi
if [ -n "$APPLIANCE" ]; then
	strip --strip-debug -o "$ROOT/usr/bin/appliance" "$APPLIANCE"
fi
install -m 0644 "$REPO/image/test-image/outpost-testreport.service" "$ROOT/usr/lib/systemd/system/"
# Updates: RAUC's slot configuration from the layer, and the certificate bundles must be
# signed with (the signing key itself never enters the image).
install -D -m 0644 "$LAYER/recipes-core/rauc/files/system.conf" "$ROOT/etc/rauc/system.conf"
if [ -n "$UPDATE_CERT" ]; then
	install -D -m 0644 "$UPDATE_CERT" "$ROOT/etc/rauc/keyring.pem"
fi
if [ -n "$BOOT_TRIES" ]; then
	mkdir -p "$ROOT/usr/lib/outpost"
	echo "$BOOT_TRIES" >"$ROOT/usr/lib/outpost/boot-tries"
fi
# The version of this root, for `appliance update` (and RAUC's bundle version check).
sed -i '/^IMAGE_VERSION=/d' "$ROOT/usr/lib/os-release"
echo "IMAGE_VERSION=$IMAGE_VERSION" >>"$ROOT/usr/lib/os-release"
install -m 0755 "$REPO/image/test-image/outpost-testreport" "$ROOT/usr/libexec/outpost/"

# Accounts at build time (the root is read-only at run time), then the enabled units.
systemd-sysusers --root="$ROOT" "$ROOT/usr/lib/sysusers.d/outpost.conf" >/dev/null 2>&1
# The console logs in as root into the appliance tool (the getty drop-ins of the tree); the
# Yocto image sets the same shell (EXTRA_USERS_PARAMS in classes/outpost_image.bbclass).
usermod --root "$ROOT" --shell /usr/libexec/outpost/admin-shell root
enable_units=$(awk '$1 == "enable" {print $2}' "$ROOT/usr/lib/systemd/system-preset/50-outpost.preset")
# shellcheck disable=SC2086 # one unit per word
systemctl --root="$ROOT" --quiet enable $enable_units outpost-testreport.service
# First-boot prompts would block an unattended unit; the machine id is transient (empty file).
systemctl --root="$ROOT" --quiet mask systemd-firstboot.service
: >"$ROOT/etc/machine-id"
echo outpost >"$ROOT/etc/hostname"
printf 'tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n' >"$ROOT/etc/fstab"

# Kernel, initramfs contents, then what the root does not need.
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
INITRD=$WORK/initramfs
mkdir -p "$INITRD"/{bin,sbin,lib/modules,etc,proc,sys,dev,run,sysroot}
install -m 0755 "$LAYER/recipes-core/outpost-initramfs/files/init" "$INITRD/init"
install -m 0755 "$ROOT/bin/busybox" "$INITRD/bin/busybox"
for tool in /sbin/veritysetup /sbin/blkid; do
	for f in "$tool" $(chroot "$ROOT" ldd "$tool" | awk '$(NF-1) ~ /^\// {print $(NF-1)} $1 ~ /^\// {print $1}' | sort -u); do
		src=$(readlink -f "$ROOT$f")
		install -D -m 0755 "$src" "$INITRD$f"
	done
done
for applet in $(chroot "$ROOT" /bin/busybox --list); do
	[ -e "$INITRD/bin/$applet" ] || [ -e "$INITRD/sbin/$applet" ] || ln -s busybox "$INITRD/bin/$applet"
done
for m in $INITRAMFS_MODULES; do
	modprobe -d "$ROOT" -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {print $2}' |
	awk '!seen[$0]++' | while read -r ko; do
		rel=${ko#"$ROOT"}
		install -D -m 0644 "$ROOT$rel" "$INITRD$rel"
		echo "$rel" >>"$INITRD/lib/modules/initramfs.load"
	done
rm -rf "${ROOT:?}"/boot/* "$ROOT/bin/busybox" "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/* \
	"$ROOT"/var/cache/ldconfig/aux-cache "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old
find "$ROOT/var/cache/apt" -type f -delete
chroot "$ROOT" depmod -a "$KVER"

# --- root slot A: squashfs + dm-verity ---------------------------------------------------------
log "squashfs"
# Every timestamp in the root is SOURCE_DATE_EPOCH, whatever the packages or a warm package
# cache brought in (mksquashfs 4.5 only uses it for the filesystem's own time).
find "$ROOT" -print0 | xargs -0 touch -h -d "@$SOURCE_DATE_EPOCH"
mksquashfs "$ROOT" "$OUT/root-a.squashfs" -comp zstd -Xcompression-level 15 -b 256K \
	-noappend -quiet -no-progress -processors "$(nproc)" >/dev/null
[ "$(stat -c %s "$OUT/root-a.squashfs")" -le "$(layout root-a size)" ] || die "root filesystem larger than slot A"
veritysetup format --salt="$VERITY_SALT" --uuid="$VERITY_UUID" --data-block-size=4096 \
	--hash-block-size=4096 "$OUT/root-a.squashfs" "$OUT/root-a.verity" >"$WORK/verity.txt"
ROOTHASH=$(awk -F':[ \t]*' '/^Root hash/ {print $2}' "$WORK/verity.txt")
[ -n "$ROOTHASH" ] || die "veritysetup printed no root hash"
echo "$ROOTHASH" >"$OUT/roothash"
[ "$(stat -c %s "$OUT/root-a.verity")" -le "$(layout root-a-verity size)" ] || die "hash tree larger than its partition"

# --- unified kernel image ---------------------------------------------------------------------
log "initramfs and unified kernel image"
find "$INITRD" -print0 | xargs -0 touch -h -d "@$SOURCE_DATE_EPOCH"
(cd "$INITRD" && find . -print0 | LC_ALL=C sort -z |
	cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) |
	zstd -q -19 -T1 >"$WORK/initramfs.cpio.zst"

# One UKI per slot, each naming its own partitions (both hold the same root, so the same hash):
# slot A's goes on the ESP, both go into an update bundle (image/build-bundle.sh).
# Their os-release carries no version (no IMAGE_VERSION, VERSION, VERSION_ID, BUILD_ID):
# systemd-boot then orders the slots' UKIs by file name, which the update tooling controls
# (usr/libexec/outpost/esp-uki in the layer); with versions, systemd-boot would put the newer
# slot first even after an admin installed an older release on purpose (--allow-downgrade).
for slot in a b; do
	echo "$KERNEL_CMDLINE" | sed -e "s/@SLOT@/$slot/g" -e "s/@ROOT_PARTUUID@/$(layout root-$slot uuid)/" \
		-e "s/@VERITY_PARTUUID@/$(layout root-$slot-verity uuid)/" -e "s/@ROOTHASH@/$ROOTHASH/" \
		| tr -d '\n' >"$WORK/cmdline-$slot"
	{
		grep -v '^VERSION_ID=\|^VERSION=\|^BUILD_ID=\|^IMAGE_VERSION=\|^PRETTY_NAME=' "$ROOT/usr/lib/os-release"
		echo "PRETTY_NAME=\"Outpost test image (root slot ${slot^^})\""
		echo "IMAGE_ID=outpost-test"
	} >"$WORK/os-release-$slot"
done
echo "$KVER" >"$WORK/uname"

STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
# Place each section after the previous one, aligned to the stub's section alignment.
align=$((16#$(objdump -p "$STUB" | awk '$1 == "SectionAlignment" {print $2}')))
last=0
while read -r size vma; do
	[ $((16#$vma + 16#$size)) -le "$last" ] || last=$((16#$vma + 16#$size))
done < <(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ {print $3, $4}')
first=$(( (last + align - 1) / align * align ))
for slot in a b; do
	next=$first
	sections=()
	for s in osrel:os-release-$slot cmdline:cmdline-$slot uname:uname linux:vmlinuz initrd:initramfs.cpio.zst; do
		name=${s%%:*} file=$WORK/${s#*:}
		sections+=(--add-section ".$name=$file" --change-section-vma ".$name=$(printf 0x%x "$next")")
		next=$(( (next + $(stat -c %s "$file") + align - 1) / align * align ))
	done
	objcopy "${sections[@]}" "$STUB" "$WORK/outpost-$slot.efi"
	python3 "$REPO/image/lib/pe_timestamp.py" "$WORK/outpost-$slot.efi" "$SOURCE_DATE_EPOCH"
done

# --- ESP ----------------------------------------------------------------------------------------
log "ESP, data partition, disk"
ESP=$OUT/esp.vfat
esp_kib=$(( $(layout esp size) / 1024 ))
mkfs.vfat -F 32 -S 512 -s 1 -n "$(layout esp label)" -i "$(layout esp fsuuid)" --invariant \
	-C "$ESP" "$esp_kib" >/dev/null
cp "$LAYER/files/wic/outpost-loader.conf" "$WORK/loader.conf"
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/loader.conf" "$WORK/outpost-a.efi"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$WORK/BOOTX64.EFI"
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/BOOTX64.EFI"
mmd -i "$ESP" ::EFI ::EFI/BOOT ::EFI/Linux ::loader
mcopy -i "$ESP" -m "$WORK/BOOTX64.EFI" ::EFI/BOOT/BOOTX64.EFI
# Generation 1, no boot counter: the factory slot is good.
mcopy -i "$ESP" -m "$WORK/outpost-a.efi" ::EFI/Linux/outpost-1-a.efi
mcopy -i "$ESP" -m "$WORK/loader.conf" ::loader/loader.conf

# --- data partition: empty ext4, fixed UUID and hash seed ------------------------------------
DATA=$OUT/data.ext4
truncate -s "$(layout data size)" "$DATA"
data_opts=$(layout data mkfs_extraopts)
# shellcheck disable=SC2086 # the options are a word list from the wks file
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L "$(layout data label)" \
	-U "$(layout data fsuuid)" $data_opts "$DATA"

# --- disk -------------------------------------------------------------------------------------
DISK=$OUT/outpost-test.img
truncate -s "$(layout disk size)" "$DISK"
python3 "$LAYOUT" sfdisk | sfdisk --quiet --no-reread --no-tell-kernel "$DISK"
put() { dd if="$2" of="$DISK" bs=1M seek=$(( $(layout "$1" start) / 1048576 )) conv=notrunc,sparse status=none; }
put esp "$ESP"
put root-a "$OUT/root-a.squashfs"
put root-a-verity "$OUT/root-a.verity"
put data "$DATA"
python3 "$LAYOUT" check "$DISK"

cp "$WORK/outpost-a.efi" "$WORK/outpost-b.efi" "$OUT/"
echo "$IMAGE_VERSION" >"$OUT/image-version"
(cd "$OUT" && sha256sum outpost-test.img esp.vfat outpost-a.efi outpost-b.efi root-a.squashfs root-a.verity data.ext4 >SHA256SUMS)
input_key >"$OUT/input-key"
echo "$SOURCE_DATE_EPOCH" >"$OUT/source-date-epoch"
rm -rf "$WORK"
log "done in $(( $(date +%s) - START )) s: $DISK ($(du -h --apparent-size "$DISK" | cut -f1) raw, $(du -h "$DISK" | cut -f1) allocated)"
log "root hash $ROOTHASH; sha256 $(awk '$2 == "outpost-test.img" {print $1}' "$OUT/SHA256SUMS")"
