#!/usr/bin/env bash
# Static checks of the Yocto layer and the image scripts; no image is built. About a minute
# warm; on a fresh machine add the linters' install and bitbake's cold parse of the whole stack
# (see tests/image/bitbake-check.sh).
#
#   tests/image/check-layer.sh
#
#  - the *-crates.inc files match Cargo.lock (yocto-layer/scripts/outpost-crates.py --check)
#  - the wks layout parses under image/lib/layout.py's rules, and the wks, the units and the
#    build constants agree (the data partition the mount unit names exists, and so on)
#  - systemd-analyze verify of every unit, with the .in templates filled in as the builds do
#  - nft -c of the firewall template (in a private network namespace: nothing is loaded)
#  - systemd-sysusers accepts the accounts file
#  - shellcheck of every shell script we ship or run
#  - the real bitbake 2.18 over the real oe-core yocto-6.0.2 + meta-openembedded + meta-rauc
#    (snapshots in ../shared/yocto), offline: `bitbake -p`, none of our recipes skipped, what the
#    layer's Python computes from the shared files, `bitbake -g outpost-image` and
#    `bitbake -g outpost-bundle`
#    (tests/image/bitbake-check.sh)
#  - oelint-adv on the recipes and classes, and the kas files against kas's own schema
#    (both from PyPI, in a virtualenv under target/)
# The last line is "N passed, N failed".
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAYER=$REPO/yocto-layer/meta-outpost
ROOTFS=$LAYER/recipes-core/outpost-base/files/rootfs
VENV=$REPO/target/lint-venv
OELINT_VERSION=9.11.2
KAS_VERSION=5.5
cd "$REPO" || exit 1

passed=0 failed=0
check() {
	local name=$1
	shift
	local out
	if out=$("$@" 2>&1); then
		passed=$((passed + 1))
		echo "ok      $name"
	else
		failed=$((failed + 1))
		echo "FAILED  $name"
		printf '%s\n' "$out" | sed 's/^/        /' | head -40
	fi
}

# The commands this script runs are listed, with their packages, in tests/host-tools.sh.
bash tests/host-tools.sh ensure layer || exit 1

const() { sed -n "s/^$1=//p" "$LAYER/files/outpost-constants.conf"; }
DATA_PARTUUID=$(python3 image/lib/layout.py get data uuid)

# The rootfs tree as both builds install it, over the host's own units (so that targets like
# sysinit.target resolve), with stand-ins for our binaries.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/root/usr/lib/systemd/system"
cp -r /lib/systemd/system/. "$TMP/root/usr/lib/systemd/system/"
cp -r "$ROOTFS/." "$TMP/root/"
find "$TMP/root" -name '*.in' | while read -r f; do
	sed -e "s/@CLIENT_PORT@/$(const CLIENT_PORT)/g" -e "s/@FEDERATION_PORT@/$(const FEDERATION_PORT)/g" \
		-e "s/@DATA_PARTUUID@/$DATA_PARTUUID/g" "$f" >"${f%.in}"
	rm "$f"
done
for bin in /usr/bin/homeserver /usr/sbin/nft /usr/bin/rauc /usr/bin/appliance; do
	mkdir -p "$TMP/root$(dirname "$bin")"
	printf '#!/bin/sh\n' >"$TMP/root$bin"
	chmod 0755 "$TMP/root$bin"
done

check "crates .inc files match Cargo.lock" python3 yocto-layer/scripts/outpost-crates.py --check

check "wks layout parses (image/lib/layout.py)" python3 image/lib/layout.py json

consistency() {
	local unit=$TMP/root/usr/lib/systemd/system/data.mount
	grep -q "^What=/dev/disk/by-partuuid/$DATA_PARTUUID$" "$unit" ||
		{ echo "data.mount does not name the wks data partition $DATA_PARTUUID"; return 1; }
	local loader
	loader=$(sed -n 's/.*--configfile \([^ ]*\).*/\1/p' "$LAYER/files/wic/outpost.wks.in")
	[ -f "$LAYER/files/wic/$loader" ] || { echo "wks --configfile $loader not in files/wic"; return 1; }
	for key in CLIENT_PORT FEDERATION_PORT VERITY_SALT VERITY_UUID KERNEL_CMDLINE; do
		[ -n "$(const "$key")" ] || { echo "outpost-constants.conf lacks $key"; return 1; }
	done
	for p in @SLOT@ @ROOT_PARTUUID@ @VERITY_PARTUUID@ @ROOTHASH@; do
		const KERNEL_CMDLINE | grep -q "$p" || { echo "KERNEL_CMDLINE lacks $p"; return 1; }
	done
	for p in outpost.slot outpost.root outpost.verity outpost.roothash; do
		grep -q "$p=" "$LAYER/recipes-core/outpost-initramfs/files/init" ||
			{ echo "the initramfs does not read $p"; return 1; }
	done
	for slot in a b; do
		python3 image/lib/layout.py get "root-$slot" uuid >/dev/null &&
			python3 image/lib/layout.py get "root-$slot-verity" uuid >/dev/null || return 1
	done
	awk '$1 == "enable" {print $2}' "$ROOTFS/usr/lib/systemd/system-preset/50-outpost.preset" |
		while read -r unit; do
			[ -e "$TMP/root/usr/lib/systemd/system/$unit" ] || { echo "preset enables missing $unit"; return 1; }
		done
}
check "wks, units, constants and initramfs agree" consistency

verify_units() {
	local out
	out=$(cd "$TMP/root/usr/lib/systemd/system" &&
		systemd-analyze verify --root="$TMP/root" --man=no homeserver.service data.mount \
			outpost-firewall.service outpost-provision.service getty@tty1.service \
			serial-getty@ttyS0.service outpost-boot-assess.service outpost-rauc.service outpost-mark-good.service outpost-update-settle.service boot-complete.target 2>&1) || { echo "$out"; return 1; }
	[ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify of the units" verify_units

check "nft -c of the firewall ruleset" unshare --net nft -c -f "$TMP/root/usr/share/outpost/firewall.nft"

sysusers() {
	local root=$TMP/sysusers
	mkdir -p "$root/etc"
	systemd-sysusers --root="$root" "$ROOTFS/usr/lib/sysusers.d/outpost.conf" &&
		grep -q '^outpost:x:850:850:' "$root/etc/passwd"
}
check "systemd-sysusers accepts the accounts (outpost 850:850)" sysusers

mapfile -t scripts < <(
	ls image/*.sh tests/image/*.sh
	echo "$LAYER/recipes-core/outpost-initramfs/files/init"
	find "$ROOTFS/usr/libexec/outpost" -type f
	echo image/test-image/outpost-testreport
)
check "shellcheck of ${#scripts[@]} scripts" shellcheck "${scripts[@]}"

if [ ! -x "$VENV/bin/oelint-adv" ] || [ ! -x "$VENV/bin/kas" ]; then
	python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "oelint-adv==$OELINT_VERSION" \
		"kas==$KAS_VERSION" >/dev/null
fi

# Its timings and any warnings are worth seeing even when it passes: printed, not captured.
bitbake_real() {
	bash tests/image/bitbake-check.sh 2>&1 | sed 's/^/        /'
	return "${PIPESTATUS[0]}"
}
if bitbake_real; then
	passed=$((passed + 1))
	echo "ok      real bitbake: -p, our recipes none skipped, -g outpost-image and outpost-bundle (tests/image/bitbake-check.sh)"
else
	failed=$((failed + 1))
	echo "FAILED  real bitbake: -p, our recipes none skipped, -g outpost-image and outpost-bundle (tests/image/bitbake-check.sh)"
fi

# Rules left out on purpose: the crates .inc format is oe-core's (space after the quote);
# IMAGE_TYPEDEP/EXTRA_IMAGECMD/CONVERSION_CMD overrides are image types, not packages; there is
# no public homepage or bug tracker; the licence is the common Apache-2.0 text; our bbappends
# change their recipes only in the Outpost distro (each requires its .inc only when
# DISTRO_FEATURES has "outpost"), which oelint cannot evaluate, so it takes the .inc files and
# the classes they inherit for unconditional changes (noncoreoverride).
oelint() {
	local out files
	mapfile -t files < <(find "$LAYER" -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' | sort)
	out=$("$VENV/bin/oelint-adv" --quiet \
		--suppress oelint.vars.inconspaces --suppress oelint.vars.notneededspace \
		--suppress oelint.vars.specific --suppress oelint.var.mandatoryvar.HOMEPAGE \
		--suppress oelint.vars.homepageping --suppress oelint.var.licenseremotefile \
		--suppress oelint.vars.noncoreoverride \
		"${files[@]}" 2>&1)
	if printf '%s\n' "$out" | grep -q ':error:'; then
		printf '%s\n' "$out" | grep ':error:'
		return 1
	fi
}
check "oelint-adv: no errors in recipes and classes" oelint

kas_schema() {
	"$VENV/bin/python" - image/kas/*.yml <<-'EOF'
		import glob, json, sys, yaml, jsonschema, kas
		schema = json.load(open(glob.glob(kas.__path__[0] + "/schema-kas.json")[0]))
		for path in sys.argv[1:]:
		    jsonschema.validate(yaml.safe_load(open(path)), schema)
		    print(path, "valid")
	EOF
}
check "kas files valid against kas $KAS_VERSION's schema" kas_schema

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
