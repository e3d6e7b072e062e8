#!/usr/bin/env python3
"""What the real bitbake made of meta-outpost, after `bitbake -p` (tests/image/bitbake-check.sh
runs it in the build directory, as the user bitbake runs as, with bitbake's lib on sys.path):

 - every .bb file of the layer was parsed into a recipe and none was skipped. bitbake counts a
   skipped recipe (SkipRecipe, an incompatible licence or COMPATIBLE_MACHINE, ...) as a
   successful parse, so `bitbake -p` alone would pass a layer whose recipes can never build;
 - the distro and machine settings we rely on survived oe-core's own configuration;
 - what the layer's Python computes from the shared files (accounts, ports, partition UUIDs)
   is what image/lib/layout.py and the sysusers file say, and our kernel bbappend reaches
   oe-core's linux-yocto;
 - the update flow: the bundle recipe (verity, system.conf's compatible string and slot
   classes, both UKIs), RAUC's configuration, the signing keys taken from the environment
   (and an unset one stopping the build), Secure Boot signing of the UKIs and systemd-boot.

    bitbake-ours.py LAYERDIR

Prints one line per check and "N passed, N failed" last. Uses the parse cache `bitbake -p`
just wrote, so it takes seconds.
"""

import os
import pathlib
import sys

import bb.tinfoil

LAYER = pathlib.Path(sys.argv[1]).resolve()
sys.dont_write_bytecode = True  # no __pycache__ in the copied tree
sys.path.insert(0, str(LAYER.parents[1] / "image/lib"))
import layout  # noqa: E402


class Results:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok      {name}")
        else:
            self.failed += 1
            print(f"FAILED  {name}{': ' + str(detail) if detail else ''}")


def ours(fn):
    return fn.split(":")[-1].startswith(str(LAYER) + "/")


def main():
    results = Results()
    recipes = sorted(str(p) for p in LAYER.glob("recipes-*/*/*.bb"))
    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        skipped = tinfoil.get_skipped_recipes()
        parsed = set(tinfoil.all_recipe_files(variants=False))
        for fn in recipes:
            rel = pathlib.Path(fn).relative_to(LAYER)
            if fn in skipped:
                results.check(f"{rel} is a recipe, not skipped", False,
                              getattr(skipped[fn], "skipreason", skipped[fn]))
            else:
                results.check(f"{rel} is a recipe, not skipped", fn in parsed, "not parsed")
        for fn, info in skipped.items():  # a bbclass-extended variant of ours, say
            if ours(fn) and fn not in recipes:
                results.check(f"{fn} not skipped", False, getattr(info, "skipreason", info))

        conf = tinfoil.config_data
        results.check("LAYERSERIES_COMPAT is exactly wrynose",
                      conf.getVar("LAYERSERIES_COMPAT_outpost") == "wrynose",
                      conf.getVar("LAYERSERIES_COMPAT_outpost"))
        results.check("DEFAULTTUNE is x86-64-v2 (corei7-64), not AVX2",
                      conf.getVar("DEFAULTTUNE") == "corei7-64", conf.getVar("DEFAULTTUNE"))
        features = conf.getVar("DISTRO_FEATURES").split()
        results.check("DISTRO_FEATURES: systemd and usrmerge, no sysvinit, x11 or wifi",
                      {"systemd", "usrmerge", "outpost"} <= set(features)
                      and not {"sysvinit", "x11", "wifi", "pulseaudio"} & set(features), features)
        results.check("no package manager and no SSH in the image features",
                      not {"package-management", "ssh-server-openssh", "ssh-server-dropbear",
                           "debug-tweaks"} & set((conf.getVar("IMAGE_FEATURES") or "").split()),
                      conf.getVar("IMAGE_FEATURES"))

        wks = layout.load()
        base = tinfoil.parse_recipe("outpost-base")
        groupadd = base.getVar("GROUPADD_PARAM:outpost-base")
        useradd = base.getVar("USERADD_PARAM:outpost-base")
        results.check("outpost-base: groupadd from sysusers.d",
                      groupadd == "--system --gid 850 outpost", groupadd)
        results.check("outpost-base: useradd from sysusers.d (fixed uid/gid, home, nologin)",
                      useradd == "--system --uid 850 --gid 850 --comment 'Outpost homeserver' "
                                 "--home-dir /data/outpost --no-create-home "
                                 "--shell /usr/sbin/nologin outpost", useradd)
        sed = " ".join((base.getVar("OUTPOST_SUBST_SED") or "").split())
        data_uuid = layout.part(wks, "data")["uuid"]
        results.check("outpost-base: substitutions use the wks data partition and the ports",
                      f"s/@DATA_PARTUUID@/{data_uuid}/g" in sed and "s/@CLIENT_PORT@/443/g" in sed,
                      sed)

        image = tinfoil.parse_recipe("outpost-image")
        for slot in ("a", "b"):
            got = image.expand("${@outpost_partition(d, 'root-%s', 'uuid')}" % slot)
            results.check(f"outpost.bbclass and layout.py agree on root-{slot}'s UUID",
                          got == layout.part(wks, f"root-{slot}")["uuid"], got)
        results.check("outpost-image: UKI named after the slot",
                      image.getVar("UKI_FILENAME") == "outpost-1-a.efi", image.getVar("UKI_FILENAME"))
        results.check("outpost-image: squashfs, its verity hash tree and the wic disk",
                      image.getVar("IMAGE_FSTYPES").split() == ["squashfs", "squashfs.verity", "wic"],
                      image.getVar("IMAGE_FSTYPES"))
        results.check("outpost-image: wic waits for the hash tree",
                      image.getVar("IMAGE_TYPEDEP:wic") == "squashfs.verity")

        # Updates: the bundle, RAUC's configuration, the keys from the environment.
        system_conf = LAYER / "recipes-core/rauc/files/system.conf"
        compatible = next(line.split("=", 1)[1] for line in system_conf.read_text().splitlines()
                          if line.startswith("compatible="))
        bundle = tinfoil.parse_recipe("outpost-bundle")
        results.check("outpost-bundle: verity format, system.conf's compatible string",
                      bundle.getVar("RAUC_BUNDLE_FORMAT") == "verity"
                      and bundle.getVar("RAUC_BUNDLE_COMPATIBLE") == compatible,
                      (bundle.getVar("RAUC_BUNDLE_FORMAT"), bundle.getVar("RAUC_BUNDLE_COMPATIBLE")))
        slots = {slot: (bundle.getVar(f"RAUC_SLOT_{slot}"),
                        bundle.getVarFlag(f"RAUC_SLOT_{slot}", "fstype"),
                        bundle.getVarFlag(f"RAUC_SLOT_{slot}", "rename"))
                 for slot in bundle.getVar("RAUC_BUNDLE_SLOTS").split()}
        results.check("outpost-bundle: the image's squashfs and hash tree for system.conf's slot "
                      "classes, named as image/build-bundle.sh names them",
                      slots == {"rootfs": ("outpost-image", "squashfs", "root.squashfs"),
                                "verity": ("outpost-image", "squashfs.verity", "root-verity.img")}
                      and {"slot.rootfs.0", "slot.verity.0"} <= set(
                          line.strip("[]") for line in system_conf.read_text().splitlines()
                          if line.startswith("[slot.")), slots)
        results.check("outpost-bundle: both slots' kernel images, after the image is complete",
                      bundle.getVar("RAUC_BUNDLE_EXTRA_FILES").split() == ["outpost-a.efi", "outpost-b.efi"]
                      and "outpost-image:do_image_complete" in (bundle.getVarFlag("do_unpack", "depends") or ""),
                      bundle.getVar("RAUC_BUNDLE_EXTRA_FILES"))
        results.check("outpost-bundle: signed with the key and certificate of the environment",
                      bundle.getVar("RAUC_KEY_FILE") == os.environ.get("OUTPOST_UPDATE_KEY")
                      and bundle.getVar("RAUC_CERT_FILE") == os.environ.get("OUTPOST_UPDATE_CERT")
                      and "outpost_require_update_keys" in bundle.getVarFlag("do_bundle", "prefuncs"),
                      (bundle.getVar("RAUC_KEY_FILE"), bundle.getVar("RAUC_CERT_FILE")))
        # Unset, a key stops the task that needs it (outpost_signing_file: bb.fatal with this
        # message) with a message naming the variable; set, there is nothing to say.
        problem = "${@outpost_signing_problem(d, 'OUTPOST_UPDATE_KEY') or 'none'}"
        fine = bundle.expand(problem)
        bundle.setVar("OUTPOST_UPDATE_KEY", "")
        message = bundle.expand(problem)
        results.check("the environment's key is accepted; unset, the build stops naming it",
                      fine == "none" and message.startswith("OUTPOST_UPDATE_KEY is not set")
                      and "BB_ENV_PASSTHROUGH_ADDITIONS" in message, (fine, message))
        conf = tinfoil.parse_recipe("rauc-conf")
        results.check("rauc-conf: our system.conf and the environment's certificate in /etc/rauc",
                      conf.getVar("FILESEXTRAPATHS").split(":")[0] == str(LAYER / "recipes-core/rauc/files")
                      and "${OUTPOST_UPDATE_CERT}" in conf.getVar("do_install", expand=False)
                      and "outpost_require_update_cert" in conf.getVarFlag("do_install", "prefuncs")
                      and conf.getVar("FILES:rauc-conf") == "/etc/rauc",
                      (conf.getVar("FILESEXTRAPATHS"), conf.getVar("FILES:rauc-conf")))
        rauc = tinfoil.parse_recipe("rauc")
        config = rauc.getVar("PACKAGECONFIG").split()
        results.check("rauc: JSON and the D-Bus service, no network download or streaming",
                      {"json", "service"} <= set(config) and not {"network", "streaming"} & set(config),
                      config)
        results.check("outpost-image: UKIs signed with the environment's Secure Boot key (sbsign)",
                      image.getVar("UKI_SB_KEY") == os.environ.get("OUTPOST_SB_KEY")
                      and image.getVar("UKI_SB_CERT") == os.environ.get("OUTPOST_SB_CERT")
                      and "--signtool=sbsign" in image.getVar("UKIFY_CMD")
                      and "sbsigntool-native" in image.getVarFlag("do_uki", "depends")
                      and "outpost_require_sb_keys" in image.getVarFlag("do_uki", "prefuncs")
                      and "outpost_bundle_ukis" in image.getVarFlag("do_uki", "postfuncs"),
                      (image.getVar("UKI_SB_KEY"), image.getVar("UKIFY_CMD")))
        results.check("outpost-image: rauc, its configuration and appliance-tools' veritysetup",
                      {"rauc", "rauc-conf", "appliance-tools"} <= set(image.getVar("IMAGE_INSTALL").split())
                      and "cryptsetup" in tinfoil.parse_recipe("appliance-tools").getVar(
                          "RDEPENDS:appliance-tools").split(), image.getVar("IMAGE_INSTALL"))
        boot = tinfoil.parse_recipe("systemd-boot")
        results.check("systemd-boot: deployed signed with the Secure Boot key",
                      "outpost_sign_loader" in boot.getVar("do_deploy", expand=False)
                      and "outpost_require_sb_keys" in boot.getVarFlag("do_deploy", "prefuncs")
                      and "sbsigntool-native" in boot.getVarFlag("do_deploy", "depends"))
        release = tinfoil.parse_recipe("os-release")
        results.check("os-release: IMAGE_VERSION is the bundle's version",
                      "IMAGE_VERSION" in release.getVar("OS_RELEASE_FIELDS").split()
                      and release.getVar("IMAGE_VERSION") == bundle.getVar("RAUC_BUNDLE_VERSION"),
                      (release.getVar("IMAGE_VERSION"), bundle.getVar("RAUC_BUNDLE_VERSION")))

        kernel = tinfoil.parse_recipe("linux-yocto")
        src_uri = kernel.getVar("SRC_URI").split()
        results.check("linux-yocto: our bbappend adds the kernel fragment for outpost-x86-64",
                      "file://outpost-x86-64.cfg" in src_uri
                      and kernel.getVar("KMACHINE") == "common-pc-64", kernel.getVar("KMACHINE"))

    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
