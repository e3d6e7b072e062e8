#!/usr/bin/env bash
# Every external command the test suite and the image scripts run, the Debian package it comes
# from, and the stage that needs it: the one list of what a fresh machine must be given.
#
#   tests/host-tools.sh list              print the table, with where each command is now
#   tests/host-tools.sh check [STAGE…]    exit 1, naming command and package, if any is missing
#   tests/host-tools.sh ensure [STAGE…]   install what is missing (one apt-get call; pip for the
#                                         few PyPI rows, into venvs under target/), then check
#
# With no STAGE, every stage. Stages: suite (cargo tests), layer (tests/image/check-layer.sh),
# build (image/build-test-image.sh, image/derive-update.sh), boot (tests/image/boot-test.py,
# tests/image/update-test.py, which also ensures the build stage: it derives its releases).
#
# Why one apt-get call, with versions chosen here: a fresh machine has qemu-utils from
# bookworm-backports (newer than bookworm's qemu-system-x86), and that qemu-utils Breaks
# bookworm's qemu-system-common, so installing qemu-system-x86 alone makes apt *remove*
# qemu-img. Packages of one source that must stay at one version are installed together, pinned
# to the version the rest of the set gets (see SAME_VERSION below), and every command is checked
# after the install, so a package that apt took away fails here with its name, not an hour later.
set -euo pipefail

# command-or-path   package            stages       why
TOOLS=$(cat <<'EOF'
openssl             openssl            suite        TLS chains and SPKI pins checked as a peer would
setsid              util-linux         suite        the setup wizard on a pseudo-terminal
unshare             util-linux         suite,layer  Synapse in a private mount namespace; nft -c
kill                procps             suite        signals to the homeserver under test
python3-venv        python3-venv       suite,layer,boot  Synapse, the layer linters, virt-firmware live in venvs
shellcheck          shellcheck         layer        the layer's and image's scripts
setpriv             util-linux         layer        bitbake runs as nobody when the check runs as root
/usr/bin/python3    python3            layer        bitbake's interpreter (as nobody: no root's pyenv)
locale:en_US.UTF-8  locales-all        layer        bitbake switches to it (oe-core sanity check)
/usr/bin/git        git                layer        oe-core HOSTTOOLS; externalsrc hashes our tree
gawk                gawk               layer        oe-core HOSTTOOLS (sanity check)
chrpath             chrpath            layer        oe-core HOSTTOOLS (sanity check)
diffstat            diffstat           layer        oe-core HOSTTOOLS (sanity check)
file                file               layer        oe-core HOSTTOOLS (sanity check)
patch               patch              layer        oe-core HOSTTOOLS (sanity check)
perl                perl-base          layer        oe-core HOSTTOOLS (sanity check)
wget                wget               layer        oe-core HOSTTOOLS (sanity check)
bzip2               bzip2              layer        oe-core HOSTTOOLS (sanity check)
xz                  xz-utils           layer        oe-core HOSTTOOLS
make                make               layer        oe-core HOSTTOOLS
gcc                 gcc                layer        oe-core HOSTTOOLS; sanity compiles a test
g++                 g++                layer        oe-core HOSTTOOLS; sanity checks C++20
rpcgen              rpcsvc-proto       layer        oe-core HOSTTOOLS
pzstd               zstd               layer        oe-core HOSTTOOLS
nft                 nftables           layer        the firewall ruleset parses
systemd-analyze     systemd            layer        the units verify
systemd-sysusers    systemd            layer,build  the image's accounts
mmdebstrap          mmdebstrap         build        the test image's root file system
mksquashfs          squashfs-tools     build        the read-only root
veritysetup         cryptsetup-bin     build        dm-verity over the root
mkfs.vfat           dosfstools         build,boot   the ESP and the PROVISION disk
mcopy               mtools             build,boot   files onto FAT without mounting
sfdisk              fdisk              build,boot   the partition table
mkfs.ext4           e2fsprogs          build        the data partition
objcopy             binutils           layer,build  the unified kernel image; oe-core HOSTTOOLS
strip               binutils           build        reproducible binaries
usermod             passwd             build        accounts in the root file system
cpio                cpio               layer,build  the initramfs; oe-core HOSTTOOLS
zstd                zstd               layer,build  the initramfs compression; oe-core HOSTTOOLS
depmod              kmod               build        kernel module lists
modprobe            kmod               build        kernel module lists
/usr/lib/systemd/boot/efi/linuxx64.efi.stub  systemd-boot-efi  build  the UKI stub
qemu-system-x86_64  qemu-system-x86    boot         boots the image (software emulation)
qemu-img            qemu-utils         boot         qcow2 overlays over the image; the update test reads the ESP back (qemu-img dd)
qemu-io             qemu-utils         boot         writes into an overlay (tamper test)
socat               socat              boot         guest-to-guest forwards
/usr/share/OVMF/OVMF_CODE_4M.fd  ovmf  boot         UEFI firmware
/usr/share/OVMF/OVMF_VARS_4M.fd  ovmf  boot         UEFI variable store template
rauc                rauc               boot         makes the update test's signed bundles (rauc bundle)
openssl             openssl            boot         the update test's throw-away signing keys
unsquashfs          squashfs-tools     boot         derives the update test's releases (derive-update.sh)
sbsign              sbsigntool         boot         signs systemd-boot and the UKIs for Secure Boot (sign-secure-boot.sh)
/usr/share/OVMF/OVMF_CODE_4M.secboot.fd  ovmf  boot  UEFI firmware with Secure Boot (update test)
venv:virt-fw-vars   pypi:virt-firmware==26.10  boot  enrolls the test's Secure Boot keys into OVMF's variables
mdir                mtools             boot         lists the boot counters in the ESP's kernel image names (update test)
/usr/sbin/ngircd    ngircd             suite        the IRC server heisenbridge bridges to (appservice_irc; GPL-2.0+, a test tool)
venv:mautrix-venv/python  pypi:mautrix==0.21.1  suite  mautrix-python's AppService as a bridge (appservice_mautrix; MPL-2.0)
venv:heisenbridge-venv/heisenbridge  pypi:heisenbridge==1.15.4  suite  a real IRC bridge (appservice_irc; MIT); own venv: it needs mautrix<0.21
chromium            chromium           suite        the OAuth pages in a real browser (oauth_browser; DevTools over --remote-debugging-pipe, no driver)
EOF
)

# Python tools that Debian bookworm does not package come from PyPI, pinned, into venvs under
# the checkout's target/ (rows whose package is pypi:DIST==VERSION): command venv:NAME is the
# program NAME of target/host-venv, venv:DIR/NAME the program NAME of its own venv target/DIR
# (for a tool whose dependencies clash with another's: heisenbridge pins mautrix below the
# version the mautrix test uses). A row is present when the program exists and the venv holds
# DIST at VERSION, so raising a pin reinstalls; `ensure` makes each venv and pip-installs them.
TARGET_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target
HOST_VENV=$TARGET_DIR/host-venv

# The venv of a venv:NAME or venv:DIR/NAME command.
venv_of() {
	case ${1#venv:} in
	*/*) echo "$TARGET_DIR/${1#venv:}" | sed 's,/[^/]*$,,' ;;
	*) echo "$HOST_VENV" ;;
	esac
}

# Packages that must be installed at the version the first one gets (see the header).
SAME_VERSION=(qemu-system-x86 qemu-utils)

# Whether the command of a row is there ($2, the row's package, checks a PyPI pin).
present() {
	case $1 in
	python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null ;;
	venv:*)
		local venv dist
		venv=$(venv_of "$1")
		[ -x "$venv/bin/${1##*[:/]}" ] || return 1
		case ${2:-} in
		pypi:*==*)
			dist=${2#pypi:}
			"$venv/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(m.version(sys.argv[1]) != sys.argv[2])' "${dist%%==*}" "${dist#*==}" 2>/dev/null
			;;
		esac
		;;
	/*) [ -e "$1" ] ;;
	locale:*) locale -a 2>/dev/null | sed 's/\.utf8$/.UTF-8/' | grep -x "${1#locale:}" >/dev/null ;; # not -q: no SIGPIPE under pipefail
	*) type -P "$1" >/dev/null 2>&1 ;;
	esac
}

# The rows for the stages asked for (all when none): "command package".
rows() {
	local want=("$@")
	while read -r cmd pkg stages _; do
		[ -n "$cmd" ] || continue
		if [ ${#want[@]} -eq 0 ]; then
			echo "$cmd $pkg"
			continue
		fi
		for s in "${want[@]}"; do
			case ",$stages," in *",$s,"*)
				echo "$cmd $pkg"
				break
				;;
			esac
		done
	done <<<"$TOOLS"
}

missing_rows() {
	rows "$@" | while read -r cmd pkg; do
		present "$cmd" "$pkg" || echo "$cmd $pkg"
	done
}

check() {
	local missing
	missing=$(missing_rows "$@")
	[ -z "$missing" ] && return 0
	while read -r cmd pkg; do
		case $pkg in
		pypi:*) echo "host-tools: missing $cmd (PyPI ${pkg#pypi:} in $(venv_of "$cmd"))" >&2 ;;
		*) echo "host-tools: missing $cmd (Debian package $pkg)" >&2 ;;
		esac
	done <<<"$missing"
	return 1
}

ensure() {
	local missing
	missing=$(missing_rows "$@")
	[ -z "$missing" ] && return 0
	# PyPI rows: pip into their venvs, after the Debian packages (python3-venv among them).
	local pypi venv reqs
	pypi=$(awk '$2 ~ /^pypi:/' <<<"$missing")
	missing=$(awk '$2 !~ /^pypi:/' <<<"$missing")
	if [ -n "$missing" ]; then ensure_debian "$missing" || return 1; fi
	if [ -n "$pypi" ]; then
		for venv in $(while read -r cmd _; do venv_of "$cmd"; done <<<"$pypi" | sort -u); do
			reqs=$(while read -r cmd pkg; do
				if [ "$(venv_of "$cmd")" = "$venv" ]; then echo "${pkg#pypi:}"; fi
			done <<<"$pypi" | sort -u)
			echo "host-tools: installing from PyPI into $venv: ${reqs//$'\n'/ }"
			# shellcheck disable=SC2086 # one word per requirement
			{ [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } &&
				"$venv/bin/pip" install -q $reqs || return 1
		done
	fi
	check "$@"
}

# Installs the Debian packages of the "command package" rows in $1.
ensure_debian() {
	local missing=$1 before pkgs=() args=()
	before=$(rows | while read -r c p; do
		if present "$c" "$p"; then echo "$c $p"; fi
	done)
	mapfile -t pkgs < <(awk '{print $2}' <<<"$missing" | sort -u)
	[ "$(id -u)" = 0 ] || { echo "host-tools: run as root to install them" >&2; return 1; }
	echo "host-tools: installing ${pkgs[*]}"
	apt-get update -q >/dev/null
	# A package of a SAME_VERSION set brings the whole set, each pinned to the first one's
	# candidate version (downgrading a newer backport where that is what keeps them together).
	local lead=${SAME_VERSION[0]} ver p
	for p in "${pkgs[@]}"; do
		if printf '%s\n' "${SAME_VERSION[@]}" | grep -qx "$p"; then
			ver=$(apt-cache policy "$lead" | awk '/Candidate:/ {print $2}')
			if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
				echo "host-tools: apt has no candidate for $lead" >&2
				return 1
			fi
			for q in "${SAME_VERSION[@]}"; do args+=("$q=$ver"); done
			break
		fi
	done
	for p in "${pkgs[@]}"; do
		printf '%s\n' "${SAME_VERSION[@]}" | grep -qx "$p" || args+=("$p")
	done
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		--allow-downgrades "${args[@]}" >/dev/null
	# What was asked for, and everything that was there before: an install may remove what
	# another stage needs (as qemu-system-x86 removed qemu-img).
	local lost=0
	while read -r c p; do
		[ -n "$c" ] || continue
		present "$c" "$p" || { echo "host-tools: the install removed $c (Debian package $p)" >&2; lost=1; }
	done <<<"$before"
	[ "$lost" = 0 ]
}

list() {
	printf '%-48s %-18s %s\n' COMMAND PACKAGE FOUND
	rows "$@" | while read -r cmd pkg; do
		local where
		case $cmd in
		python3-venv) present "$cmd" && where=python3 || where=- ;;
		venv:*) present "$cmd" "$pkg" && where=$(venv_of "$cmd")/bin/${cmd##*[:/]} || where=- ;;
		/* | locale:*) present "$cmd" && where=$cmd || where=- ;;
		*) where=$(type -P "$cmd" || echo -) ;;
		esac
		printf '%-48s %-18s %s\n' "$cmd" "$pkg" "$where"
	done
}

cmd=${1:-list}
shift || true
for stage in "$@"; do
	case $stage in
	suite | layer | build | boot) ;;
	*)
		echo "host-tools: unknown stage '$stage' (suite, layer, build, boot)" >&2
		exit 2
		;;
	esac
done
case $cmd in
list | check | ensure) "$cmd" "$@" ;;
*)
	echo "usage: $0 list|check|ensure [suite|layer|build|boot …]" >&2
	exit 2
	;;
esac
