SUMMARY = "Outpost initramfs /init"
DESCRIPTION = "Verifies and opens the dm-verity root slot named on the kernel command line, then switches to it."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The same script is the /init of the qemu test image (image/build-test-image.sh).
SRC_URI = "file://init"
S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -m 0755 ${S}/init ${D}/init
    install -d ${D}/dev ${D}/proc ${D}/sys ${D}/run ${D}/sysroot
}

FILES:${PN} += "/init /dev /proc /sys /run /sysroot"
# busybox: sh, mount, switch_root; cryptsetup: veritysetup; util-linux-blkid: PARTUUID lookup.
RDEPENDS:${PN} = "busybox cryptsetup util-linux-blkid"
