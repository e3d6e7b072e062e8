SUMMARY = "Outpost update bundle: a signed RAUC bundle (verity format) of outpost-image"
DESCRIPTION = "What an installer copies to a USB stick and installs with `appliance update \
apply`: the root filesystem, its dm-verity hash tree and one unified kernel image per slot, \
signed with the vendor's update key."
LICENSE = "MIT"

# The same bundle image/build-bundle.sh makes from a qemu test image:
#   [image.rootfs] root.squashfs      outpost-image's squashfs, written to the inactive root-X
#   [image.verity] root-verity.img    its dm-verity hash tree, written to root-X-verity
#   outpost-a.efi, outpost-b.efi      each slot's UKI (outpost_image.bbclass); RAUC's
#                                     post-install handler copies the one of the slot it wrote
#                                     to the ESP (usr/libexec/outpost/rauc-install-uki)
# Filenames matter to RAUC: a raw slot takes *.img and *.squashfs.
inherit bundle outpost outpost_signing

# Nothing to fetch: every input is in DEPLOY_DIR_IMAGE, made by outpost-image.
SRC_URI = ""

RAUC_BUNDLE_FORMAT = "verity"
# The unit refuses a bundle whose compatible string is not its system.conf's (one source).
RAUC_BUNDLE_COMPATIBLE = "${@outpost_rauc_compatible(d)}"
# `appliance update apply` compares it with the running root's IMAGE_VERSION (os-release).
RAUC_BUNDLE_VERSION = "${OUTPOST_IMAGE_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "${DISTRO_NAME} ${OUTPOST_IMAGE_VERSION}"
# No build time in the manifest: the bundle depends only on its inputs.
RAUC_BUNDLE_BUILD = "${OUTPOST_IMAGE_VERSION}"

RAUC_BUNDLE_SLOTS = "rootfs verity"
RAUC_SLOT_rootfs = "outpost-image"
RAUC_SLOT_rootfs[fstype] = "squashfs"
RAUC_SLOT_rootfs[rename] = "root.squashfs"
RAUC_SLOT_verity = "outpost-image"
RAUC_SLOT_verity[fstype] = "squashfs.verity"
RAUC_SLOT_verity[rename] = "root-verity.img"

RAUC_BUNDLE_EXTRA_FILES = "outpost-a.efi outpost-b.efi"
RAUC_BUNDLE_EXTRA_DEPENDS = "outpost-image:do_image_complete"

# The vendor's update key and certificate, from the build machine's environment
# (outpost_signing.bbclass): never in the repository, never in the image.
RAUC_KEY_FILE = "${OUTPOST_UPDATE_KEY}"
RAUC_CERT_FILE = "${OUTPOST_UPDATE_CERT}"
do_bundle[prefuncs] += "outpost_require_update_keys"

BUNDLE_BASENAME = "outpost"
BUNDLE_NAME = "${BUNDLE_BASENAME}-${OUTPOST_IMAGE_VERSION}"
