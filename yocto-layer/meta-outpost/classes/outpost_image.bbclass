# outpost_image.bbclass: turn a read-only root filesystem into an Outpost root slot.
#
# For an image recipe that builds a squashfs and a wic disk from files/wic/outpost.wks.in:
#   1. image type "squashfs.verity": a dm-verity hash tree for the squashfs, made with the fixed
#      salt and UUID of files/outpost-constants.conf, so the root hash depends only on the root
#      filesystem's bytes. Writes ${IMAGE_NAME}.squashfs.verity (the hash partition's content)
#      and ${IMAGE_NAME}.squashfs.verity-info (veritysetup's report, with the root hash).
#   2. the unified kernel image of slot A (oe-core's uki.bbclass), run after the hash tree so its
#      built-in command line (KERNEL_CMDLINE of outpost-constants.conf) carries the root hash
#      and the slot's partition UUIDs from the wks file. A root that does not match the hash is
#      refused by the initramfs (recipes-core/outpost-initramfs).
#   3. checks that the squashfs and the hash tree fit their partitions.
#   4. root's login shell becomes the appliance console (admin-shell); root has no password.
#   5. the update bundle's kernel images (recipes-core/bundles/outpost-bundle_1.0.bb):
#      outpost-a.efi and outpost-b.efi in DEPLOY_DIR_IMAGE, each naming its own slot's
#      partitions and the same root hash (a bundle's root filesystem goes into whichever slot
#      is inactive; RAUC's post-install handler rauc-install-uki puts that slot's UKI on the ESP).
#   6. every UKI signed for Secure Boot (outpost_secureboot.bbclass, keys from the environment).
#
# Variables:
#   OUTPOST_SLOT   the slot the factory disk boots, "a"
# Everything else comes from outpost.bbclass. Failures stop the build with bb.fatal.

inherit outpost uki extrausers outpost_secureboot

OUTPOST_SLOT ?= "a"

IMAGE_FSTYPES = "squashfs squashfs.verity wic"
IMAGE_TYPEDEP:wic = "squashfs.verity"
EXTRA_IMAGECMD:squashfs = "-comp zstd -Xcompression-level 15 -b 256K -noappend"

CONVERSIONTYPES:append = " verity"
CONVERSION_DEPENDS_verity = "cryptsetup-native"
CONVERSION_CMD:verity = "veritysetup format --salt=${OUTPOST_VERITY_SALT} --uuid=${OUTPOST_VERITY_UUID} \
    --data-block-size=4096 --hash-block-size=4096 \
    ${IMAGE_NAME}.${type} ${IMAGE_NAME}.${type}.verity > ${IMAGE_NAME}.${type}.verity-info"

# The console logs in as root (getty drop-ins in outpost-base) into the appliance tool.
EXTRA_USERS_PARAMS = "usermod --shell ${libexecdir}/outpost/admin-shell root;"

# Generation 1, no boot counter: the factory slot, good (the naming of the slots' UKIs on the
# ESP is described in outpost-base's usr/libexec/outpost/esp-uki).
UKI_FILENAME = "outpost-1-${OUTPOST_SLOT}.efi"
UKI_CMDLINE = "set by outpost_uki_cmdline once the root hash exists"

def outpost_roothash(d):
    info = d.expand('${IMGDEPLOYDIR}/${IMAGE_NAME}.squashfs.verity-info')
    if not os.path.exists(info):
        bb.fatal("outpost_image: %s is missing; the squashfs.verity image type did not run" % info)
    with open(info) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key.strip() == 'Root hash':
                return value.strip()
    bb.fatal("outpost_image: no root hash in %s" % info)

python outpost_uki_cmdline() {
    slot = d.getVar('OUTPOST_SLOT')
    if slot not in ('a', 'b'):
        bb.fatal("outpost_image: OUTPOST_SLOT must be a or b, not %s" % slot)
    cmdline = outpost_constant(d, 'KERNEL_CMDLINE')
    for key, value in (('@SLOT@', slot),
                       ('@ROOT_PARTUUID@', outpost_partition(d, 'root-' + slot, 'uuid')),
                       ('@VERITY_PARTUUID@', outpost_partition(d, 'root-%s-verity' % slot, 'uuid')),
                       ('@ROOTHASH@', outpost_roothash(d))):
        cmdline = cmdline.replace(key, value)
    if '@' in cmdline:
        bb.fatal("outpost_image: unfilled placeholder in the kernel command line: %s" % cmdline)
    d.setVar('UKI_CMDLINE', cmdline)
    bb.note("outpost_image: slot %s command line: %s" % (slot, cmdline))
}
do_uki[prefuncs] += "outpost_uki_cmdline"

python outpost_check_sizes() {
    slot = d.getVar('OUTPOST_SLOT')
    for suffix, part in (('squashfs', 'root-' + slot), ('squashfs.verity', 'root-%s-verity' % slot)):
        path = d.expand('${IMGDEPLOYDIR}/${IMAGE_NAME}.' + suffix)
        limit = int(outpost_partition(d, part, 'size_mib')) * 1024 * 1024
        size = os.path.getsize(path)
        if size > limit:
            bb.fatal("outpost_image: %s is %d bytes, more than partition %s (%d)" % (path, size, part, limit))
}
do_uki[prefuncs] += "outpost_check_sizes"

python () {
    # The unified kernel image needs the root hash: build it after the squashfs and its hash
    # tree (uki.bbclass alone orders it right after do_rootfs).
    bb.build.addtask('do_uki', 'do_image_wic', 'do_image_squashfs', d)
}

python outpost_bundle_ukis() {
    # Slot a's is the factory UKI under the bundle's name; slot b's is built the same way
    # (do_uki's body, so signed alike) with slot b's command line.
    import shutil
    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    shutil.copyfile(os.path.join(deploy, d.getVar('UKI_FILENAME')), os.path.join(deploy, 'outpost-a.efi'))
    localdata = bb.data.createCopy(d)
    localdata.setVar('OUTPOST_SLOT', 'b')
    localdata.setVar('UKI_FILENAME', 'outpost-b.efi')
    bb.build.exec_func('outpost_uki_cmdline', localdata)
    bb.build.exec_func('do_uki', localdata)
    for slot in ('a', 'b'):
        if not os.path.isfile(os.path.join(deploy, 'outpost-%s.efi' % slot)):
            bb.fatal("outpost_image: outpost-%s.efi was not written" % slot)
}
do_uki[postfuncs] += "outpost_bundle_ukis"
