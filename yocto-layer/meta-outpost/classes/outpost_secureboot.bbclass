# outpost_secureboot.bbclass: UEFI Secure Boot signing of the boot chain with the vendor's db key.
#
# The firmware runs only EFI binaries signed by a key in its db. Signed here (sbsign,
# Authenticode, from sbsigntool-native, with OUTPOST_SB_KEY / OUTPOST_SB_CERT from the build
# machine's environment, see outpost_signing.bbclass):
#   - an image recipe with uki.bbclass (outpost_image.bbclass): every unified kernel image,
#     kernel included (ukify --sign-kernel), so the kernel command line that carries the root
#     hash is covered by the signature;
#   - systemd-boot (recipes-core/systemd/systemd-boot_%.bbappend): the loader in
#     DEPLOY_DIR_IMAGE, which wic copies to EFI/BOOT/BOOTX64.EFI.
# The chain is then: firmware db -> signed systemd-boot and UKI -> root hash on the signed
# command line -> dm-verity over the root (image/README.md, "Secure Boot"). The qemu test image
# signs the same files with image/sign-secure-boot.sh.
#
# Without the keys the build stops (outpost_require_sb_keys): an unsigned UKI would boot only
# with Secure Boot off, where nothing protects its command line.

inherit outpost_signing

# uki.bbclass signs when UKI_SB_KEY is set: ukify calls sbsign for the kernel and the UKI.
UKI_SB_KEY = "${OUTPOST_SB_KEY}"
UKI_SB_CERT = "${OUTPOST_SB_CERT}"
UKIFY_CMD = "ukify build --signtool=sbsign"
do_uki[depends] += "${OUTPOST_SBSIGN_DEPENDS}"
do_uki[prefuncs] += "outpost_require_sb_keys"
do_uki[file-checksums] += "${OUTPOST_SB_KEY}:False ${OUTPOST_SB_CERT}:False"

# The boot loader: signs what systemd-boot's do_deploy put in DEPLOYDIR (only that recipe
# calls it, from its do_deploy).
outpost_sign_loader() {
    found=0
    for loader in ${DEPLOYDIR}/systemd-boot*.efi; do
        [ -f "$loader" ] || continue
        outpost_sbsign "$loader"
        found=1
    done
    [ "$found" = 1 ] || bbfatal "outpost_secureboot: no systemd-boot*.efi in ${DEPLOYDIR} to sign"
}
