#!/usr/bin/env bash
# meta-outpost checked by the real bitbake 2.18 against the real oe-core yocto-6.0.2 and
# meta-openembedded, offline (BB_NO_NETWORK = "1"). Called by tests/image/check-layer.sh.
#
#   tests/image/bitbake-check.sh
#
#  1. the layer snapshots of ../shared/yocto (beside the repository; OUTPOST_YOCTO_SNAPSHOTS
#     overrides) are verified against their SHA256SUMS and unpacked into target/yocto/layers
#     (again only when a tarball changes; shared/ is read-only and never written)
#  2. the repository's working tree (tracked and untracked-but-not-ignored files, so uncommitted
#     edits count) is copied to target/yocto/outpost: bitbake parses the layer from there, and
#     the cargo recipes' externalsrc hashes that copy, not a tree holding target/'s gigabytes
#  3. `bitbake -p`: every recipe, class, conf and bbappend of the whole stack, less the
#     meta-openembedded recipes the distro masks (BBMASK in conf/distro/outpost.conf)
#  4. tests/image/bitbake-ours.py: every recipe of ours parsed and none skipped, and the values
#     the layer computes from the shared files
#  5. `bitbake -g outpost-image` and `bitbake -g outpost-bundle`: the image's and the update
#     bundle's whole task graphs resolve, and they hold our recipes, RAUC and the signing tool
# The signing keys come from the environment (OUTPOST_UPDATE_KEY/CERT, OUTPOST_SB_KEY/CERT,
# through BB_ENV_PASSTHROUGH_ADDITIONS, as kas passes them): throw-away ones are made under
# target/yocto/keys for the parse (never committed, never used to sign anything here).
# Any ERROR, a non-zero exit, or a WARNING that names our layer, distro, machine or recipes
# fails the check; other warnings are printed.
#
# bitbake refuses to run as root (oe-core's sanity class: "Do not use Bitbake as root"), and we
# keep that class: it checks the host tools and the locale the way a real build does. As root
# (CI), bitbake runs as the unprivileged user nobody (setpriv), which owns target/yocto and can
# only read the rest; otherwise it runs as the calling user.
#
# The parse cache stays in target/yocto/build between runs: a cold run parses the ~980 recipes
# the distro leaves unmasked (77 s on two cores; 405 s before the mask), a warm one only what
# changed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SNAPSHOTS=${OUTPOST_YOCTO_SNAPSHOTS:-$REPO/../shared/yocto}
WORK=$REPO/target/yocto
LAYERS=$WORK/layers
TREE=$WORK/outpost
BUILD=$WORK/build

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "bitbake-check.sh: $*" >&2; exit 1; }

[ -f "$SNAPSHOTS/SHA256SUMS" ] || die "no layer snapshots at $SNAPSHOTS (see its README)"
SNAPSHOTS=$(cd "$SNAPSHOTS" && pwd)

if [ "$(id -u)" = 0 ]; then
	RUN_UID=65534 RUN_GID=65534
	AS_USER=(setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups)
else
	RUN_UID=$(id -u) RUN_GID=$(id -g)
	AS_USER=()
fi

# --- 1. the layer snapshots ---------------------------------------------------------------
(cd "$SNAPSHOTS" && sha256sum --quiet -c SHA256SUMS) || die "a snapshot in $SNAPSHOTS does not match SHA256SUMS"
mkdir -p "$LAYERS"
while read -r sum tarball; do
	name=${tarball%-*} # openembedded-core-5d1aa5c8.tar.gz unpacks into openembedded-core/
	stamp=$LAYERS/.$name.sha256
	if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
		log "unpacking $tarball"
		rm -rf "${LAYERS:?}/$name" "$stamp"
		tar -xzf "$SNAPSHOTS/$tarball" -C "$LAYERS" --no-same-owner
		echo "$sum" >"$stamp"
	fi
done <"$SNAPSHOTS/SHA256SUMS"
for name in bitbake openembedded-core meta-openembedded meta-rauc; do
	[ -d "$LAYERS/$name" ] || die "no $name among the snapshots"
done

# --- 2. the working tree, as kas would check it out -----------------------------------------
# tar keeps the mtimes, so unchanged files stay valid in the parse cache. The copy is its own
# git repository, as a kas checkout is: externalsrc hashes the tree with git.
rm -rf "$TREE"
mkdir -p "$TREE"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar -cf - --null -T -) | tar -xf - -C "$TREE"
mkdir -p "$BUILD/conf" "$WORK/home"
# Throw-away signing keys, standing in for the vendor's (made once per machine).
KEYS=$WORK/keys
for name in update sb; do
	[ -f "$KEYS/$name.cert.pem" ] && continue
	mkdir -p "$KEYS"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/O=Outpost check/CN=$name (throw-away)" \
		-keyout "$KEYS/$name.key.pem" -out "$KEYS/$name.cert.pem" 2>/dev/null || die "openssl failed"
done
chown -R "$RUN_UID:$RUN_GID" "$WORK"
# PYTHONHASHSEED=0: bitbake keys its parse cache by a hash of the base configuration, and
# values built from Python sets (COMBINED_FEATURES, SSTATETASKS) come out in the process's
# string-hash order. With a random seed per process, `bitbake -p`, the tinfoil script and each
# `bitbake -g` got caches of their own more often than not: a cold run parsed all 2,955
# recipes twice (405 s and 412 s on CI's two cores). oe-core exports the same seed to tasks.
as_user() {
	env -i HOME="$WORK/home" LANG=en_US.UTF-8 PYTHONHASHSEED=0 \
		PATH="$LAYERS/bitbake/bin:/usr/bin:/bin:/usr/sbin:/sbin" PYTHONPATH="$LAYERS/bitbake/lib" \
		OUTPOST_UPDATE_KEY="$KEYS/update.key.pem" OUTPOST_UPDATE_CERT="$KEYS/update.cert.pem" \
		OUTPOST_SB_KEY="$KEYS/sb.key.pem" OUTPOST_SB_CERT="$KEYS/sb.cert.pem" \
		BB_ENV_PASSTHROUGH_ADDITIONS="OUTPOST_UPDATE_KEY OUTPOST_UPDATE_CERT OUTPOST_SB_KEY OUTPOST_SB_CERT" \
		"${AS_USER[@]}" "$@"
}
as_user test -w "$BUILD" -a -r "$TREE/yocto-layer/meta-outpost/conf/layer.conf" ||
	die "user $RUN_UID cannot use $WORK (is a directory above it closed to others?)"
(cd "$TREE" && as_user git init -q && as_user git add -A)

cat >"$BUILD/conf/bblayers.conf" <<EOF
# Written by tests/image/bitbake-check.sh: the layers of image/kas/outpost.yml.
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS = " \\
    $LAYERS/openembedded-core/meta \\
    $LAYERS/meta-openembedded/meta-oe \\
    $LAYERS/meta-openembedded/meta-python \\
    $LAYERS/meta-openembedded/meta-networking \\
    $LAYERS/meta-rauc \\
    $TREE/yocto-layer/meta-outpost \\
"
EOF
cat >"$BUILD/conf/local.conf" <<'EOF'
# Written by tests/image/bitbake-check.sh: what image/kas/outpost.yml sets, offline.
DISTRO = "outpost"
MACHINE = "outpost-x86-64"
BB_NO_NETWORK = "1"
DL_DIR = "${TOPDIR}/downloads"
SSTATE_DIR = "${TOPDIR}/sstate-cache"
BB_SRCREV_POLICY = "cache"
EOF
chown -R "$RUN_UID:$RUN_GID" "$BUILD/conf"

# --- 3-5. bitbake -------------------------------------------------------------------------
# A warning is ours when, with the snapshot and build paths taken out, it names the layer, the
# distro or machine (outpost...) or one of our recipes.
ours='outpost|homeserver|appliance'
failed=0
judge() {
	local logfile=$1 rc=$2 line
	if [ "$rc" != 0 ]; then
		echo "FAILED: exit status $rc"
		failed=1
	fi
	while IFS= read -r line; do
		case $line in
		ERROR:*)
			echo "  $line"
			failed=1
			;;
		WARNING:*)
			if sed -e "s#$LAYERS/##g" -e "s#$BUILD/##g" -e "s#$TREE#<outpost>#g" <<<"$line" |
				grep -qiE "$ours"; then
				echo "  $line   <- names our layer"
				failed=1
			else
				echo "  $line   (not ours)"
			fi
			;;
		esac
	done < <(tr '\r' '\n' <"$logfile")
}
step() {
	local name=$1 logfile=$WORK/$2.log start rc=0
	shift 2
	start=$(date +%s)
	(cd "$BUILD" && as_user "$@") >"$logfile" 2>&1 || rc=$?
	log "$name: $(($(date +%s) - start)) s ($(tr '\r' '\n' <"$logfile" | grep -m1 -o 'Parsing of .* errors\.' || echo 'see log'))"
	judge "$logfile" "$rc"
	[ "$rc" = 0 ] || tail -20 "$logfile"
}

step "bitbake -p" parse bitbake -p
step "our recipes" ours python3 "$TREE/tests/image/bitbake-ours.py" "$TREE/yocto-layer/meta-outpost"
grep -E '^(FAILED|[0-9]+ passed)' "$WORK/ours.log" | sed 's/^/  /'
graph() {
	local target=$1
	shift
	rm -f "$BUILD/pn-buildlist" # a stale one must not pass for this run's
	step "bitbake -g $target" "graph-$target" bitbake -g "$target"
	if [ -f "$BUILD/pn-buildlist" ]; then
		for pn in "$@"; do
			grep -qx "$pn" "$BUILD/pn-buildlist" || { echo "  $target does not pull in $pn"; failed=1; }
		done
		echo "  $target: $(wc -l <"$BUILD/pn-buildlist") recipes in its task graph"
	else
		echo "  no pn-buildlist written"
		failed=1
	fi
}
graph outpost-image outpost-image outpost-base outpost-initramfs outpost-initramfs-init \
	homeserver appliance-tools linux-yocto systemd-boot nftables cryptsetup rauc rauc-conf \
	sbsigntool-native
graph outpost-bundle outpost-bundle outpost-image rauc-native squashfs-tools-native
(cd "$BUILD" && as_user bitbake -m) >/dev/null 2>&1 || true # stop the server now, not on its timer

[ "$failed" = 0 ] || die "failed (logs: $WORK/{parse,ours,graph-*}.log)"
log "bitbake: the layer parses, outpost-image and outpost-bundle resolve"
