SUMMARY = "sbsign and sbverify: Authenticode signing of UEFI binaries, on the build host"
DESCRIPTION = "Signs systemd-boot and the unified kernel images with the vendor's Secure Boot \
db key (classes/outpost_secureboot.bbclass). Neither oe-core nor meta-openembedded at the \
pinned commits carries it (uki.bbclass points at meta-secure-core), and a whole security layer \
for one build tool is more than this image needs."
HOMEPAGE = "https://git.kernel.org/pub/scm/linux/kernel/git/jejb/sbsigntools.git"
# The tools are GPL-3.0; they link ccan modules (talloc and helpers) statically. Only the build
# host runs them: nothing of this recipe enters the image.
LICENSE = "GPL-3.0-only"
LIC_FILES_CHKSUM = "file://LICENSE.GPLv3;md5=9eef91148a9b14ec7f9df333daebc746 \
                    file://COPYING;md5=a7710ac18adec371b84a9594ed04fd20"

# gitsm: the ccan library is a submodule (lib/ccan.git). Not fetched or built on the machines
# that check this layer (no network there): see image/README.md, "What has not been verified".
SRC_URI = "gitsm://git.kernel.org/pub/scm/linux/kernel/git/jejb/sbsigntools.git;protocol=https;branch=master"
SRCREV = "f12484869c9590682ac3253d583bf59b890bb826"
PV = "0.9+git"

DEPENDS = "binutils-native openssl-native gnu-efi-native util-linux-native help2man-native"

inherit native autotools-brokensep pkgconfig

# autogen.sh builds the ccan tree from the submodule (create-ccan-tree, with the host compiler),
# writes AUTHORS and ChangeLog from git and runs autoreconf; then the ordinary configure.
do_configure() {
    cd ${S}
    ./autogen.sh --noconfigure
    oe_runconf
}

# gnu-efi's headers, for the EFI variable tools built beside sbsign.
EXTRA_OEMAKE = "EFI_CPPFLAGS='-I${STAGING_INCDIR}/efi -I${STAGING_INCDIR}/efi/${BUILD_ARCH}'"
