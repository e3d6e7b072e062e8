SUMMARY = "Outpost initramfs: opens the verified root slot"
DESCRIPTION = "Opens the dm-verity root slot named by the unified kernel image and switches to it."
LICENSE = "MIT"

# The kernel has the whole boot path built in (recipes-kernel/linux), so no modules here.
PACKAGE_INSTALL = "outpost-initramfs-init busybox cryptsetup util-linux-blkid"
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
NO_RECOMMENDATIONS = "1"
IMAGE_FSTYPES = "${INITRAMFS_FSTYPES}"
INITRAMFS_FSTYPES = "cpio.zst"
IMAGE_NAME_SUFFIX ?= ""
IMAGE_ROOTFS_SIZE = "8192"
IMAGE_ROOTFS_EXTRA_SPACE = "0"

inherit core-image
