SUMMARY = "Outpost appliance console tool"
DESCRIPTION = "The 'appliance' CLI: first-boot setup, users, peers, backup and restore, status \
and self-test of an Outpost unit, at its local console."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Same monorepo as homeserver_0.1.0.bb; the crate is the workspace member appliance-tools/.
inherit cargo externalsrc
EXTERNALSRC = "${OUTPOST_LAYERDIR}/../.."
EXTERNALSRC_BUILD = "${WORKDIR}/build"
CARGO_SRC_DIR = "appliance-tools"

# Generated from Cargo.lock: yocto-layer/scripts/outpost-crates.py --write.
require ${BPN}-crates.inc

# `update apply` runs rauc and checks a bundle's payload with veritysetup (cryptsetup).
RDEPENDS:${PN} = "outpost-base rauc cryptsetup"
