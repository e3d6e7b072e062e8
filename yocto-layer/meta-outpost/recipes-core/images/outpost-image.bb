SUMMARY = "Outpost: the sealed Matrix appliance image"
DESCRIPTION = "A read-only, dm-verity protected root with the Outpost homeserver and the \
appliance console tool, on the disk layout of files/wic/outpost.wks.in."
LICENSE = "MIT"

# rauc-conf by name: the image installs no recommendations, and rauc only recommends it.
IMAGE_INSTALL = "packagegroup-core-boot outpost-base homeserver appliance-tools rauc rauc-conf"
IMAGE_FEATURES = "read-only-rootfs"
IMAGE_LINGUAS = ""
NO_RECOMMENDATIONS = "1"

INITRAMFS_IMAGE = "outpost-initramfs"
INITRAMFS_FSTYPES = "cpio.zst"
WKS_FILE = "outpost.wks.in"

inherit core-image outpost_image

# The homeserver must not find a key or a config in the image: both are made on the unit.
python outpost_no_baked_secrets() {
    rootfs = d.getVar('IMAGE_ROOTFS')
    for name in ('data/outpost/signing.key', 'data/outpost/homeserver.toml'):
        if os.path.exists(os.path.join(rootfs, name)):
            bb.fatal("outpost-image: %s is in the image; keys and config are made at provisioning" % name)
}
ROOTFS_POSTPROCESS_COMMAND += "outpost_no_baked_secrets"
