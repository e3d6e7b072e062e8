SUMMARY = "Outpost system integration: units, accounts, /data layout, firewall"
DESCRIPTION = "The systemd units of the homeserver, the data partition and the firewall, the \
system accounts, the /data layout, the nftables ruleset, the default network and the admin \
console shell of an Outpost unit."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The tree under files/rootfs/ is installed as it is, *.in files with @VARIABLE@s filled in
# (outpost.bbclass). The qemu test image copies the same tree (image/build-test-image.sh), so
# nothing here names a file: add a file to the tree and both images have it.
SRC_URI = "file://rootfs/"
S = "${UNPACKDIR}"

inherit allarch outpost useradd

# System accounts with the fixed ids of the sysusers.d file, created at build time: the root
# filesystem is read-only on the unit.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "${@outpost_sysusers(d)[0]}"
USERADD_PARAM:${PN} = "${@outpost_sysusers(d)[1]}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    cd ${S}/rootfs
    find . -type d | while read -r dir; do
        install -d -m 0755 "${D}/$dir"
    done
    find . -type f | while read -r file; do
        mode=0644
        [ -x "$file" ] && mode=0755
        case "$file" in
        *.in)
            sed ${OUTPOST_SUBST_SED} "$file" > "${D}/${file%.in}"
            chmod "$mode" "${D}/${file%.in}"
            if grep -n '@[A-Z_]*@' "${D}/${file%.in}"; then
                bbfatal "unfilled @VARIABLE@ in $file"
            fi
            ;;
        *)
            install -m "$mode" "$file" "${D}/$file"
            ;;
        esac
    done
    # Mount point of the data partition.
    install -d -m 0755 ${D}/data
}

FILES:${PN} += "/data ${nonarch_libdir}/systemd ${nonarch_libdir}/sysusers.d \
    ${nonarch_libdir}/tmpfiles.d ${nonarch_libdir}/sysctl.d ${datadir}/outpost ${libexecdir}/outpost"
RDEPENDS:${PN} = "homeserver nftables systemd util-linux-mount util-linux-agetty"
RRECOMMENDS:${PN} = "appliance-tools"
