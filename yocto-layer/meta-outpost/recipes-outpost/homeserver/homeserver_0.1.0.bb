SUMMARY = "Outpost Matrix homeserver"
DESCRIPTION = "A SQLite-backed Matrix homeserver for closed federations of allow-listed units."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Built from the repository this layer lives in (a monorepo: yocto-layer/ sits beside the
# workspace), so the image always carries the binaries of the same commit as its metadata.
inherit cargo externalsrc
EXTERNALSRC = "${OUTPOST_LAYERDIR}/../.."
EXTERNALSRC_BUILD = "${WORKDIR}/build"
CARGO_SRC_DIR = "homeserver"

# One crate:// entry per crate of the workspace's Cargo.lock. Generated, never edited:
# yocto-layer/scripts/outpost-crates.py --write (the test suite fails when it drifts).
require ${BPN}-crates.inc

# The unit, its account and its data directory are in outpost-base (one place for both images).
RRECOMMENDS:${PN} = "outpost-base"
