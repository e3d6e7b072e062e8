#!/usr/bin/env python3
"""Parse the meta-outpost layer with bitbake's own parser (the `bb` package of the PyPI
bitbake-setup wheel), without oe-core: the oe-core classes and includes our files use are
stubbed as empty files. This catches syntax errors in every .conf, .bb, .bbappend, .inc and
.bbclass, compiles their Python, runs their anonymous Python, and checks what the layer's own
Python computes from the shared files (accounts, ports, partition UUIDs).

    <venv with bitbake-setup>/bin/python tests/image/bb-parse.py

Prints one line per check and "N passed, N failed" last.
"""

import logging
import pathlib
import sys
import tempfile
import types

# bb.siggen imports hashserv (a sibling of bb in a bitbake checkout, not in the wheel); nothing
# here talks to a hash server.
for name in ("hashserv", "hashserv.client"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["hashserv"].client = sys.modules["hashserv.client"]

import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.parse  # noqa: E402
import bb.siggen  # noqa: E402
import bb.utils  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYER = REPO / "yocto-layer/meta-outpost"
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(REPO / "image/lib"))
import layout  # noqa: E402

# What our files inherit or require from oe-core; each becomes an empty stub.
STUB_CLASSES = ["base", "allarch", "useradd", "cargo", "externalsrc", "core-image", "uki",
                "extrausers"]
STUB_INCLUDES = ["conf/machine/include/x86/tune-corei7.inc",
                 "conf/machine/include/x86/x86-base.inc",
                 "conf/distro/include/security_flags.inc"]


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


def base_datastore(stubs):
    d = bb.data.init()
    d.setVar("BBPATH", f"{LAYER}:{stubs}")
    d.setVar("TOPDIR", str(stubs))
    d.setVar("LAYERDIR", str(LAYER))
    bb.parse.handle(str(LAYER / "conf/layer.conf"), d, True)
    d.delVar("LAYERDIR")
    d.setVar("DISTRO", "outpost")
    d.setVar("MACHINE", "outpost-x86-64")
    d.setVar("OVERRIDES", "outpost-x86-64:outpost:class-target")
    bb.parse.handle(str(LAYER / "conf/distro/outpost.conf"), d, True)
    bb.parse.handle(str(LAYER / "conf/machine/outpost-x86-64.conf"), d, True)
    for var, value in {"libexecdir": "/usr/libexec", "sbindir": "/usr/sbin",
                       "nonarch_libdir": "/usr/lib", "datadir": "/usr/share",
                       "COMMON_LICENSE_DIR": "/licenses", "UNPACKDIR": "/unpack",
                       "WORKDIR": "/work", "THISDIR": "/this"}.items():
        d.setVar(var, value)
    return d


def parse_recipe(path, base):
    d = bb.data.createCopy(base)
    fn = str(path)
    d.setVar("FILE", fn)
    d.setVar("FILE_DIRNAME", str(path.parent))
    pn = path.name.split("_")[0].removesuffix(".bb")
    d.setVar("PN", pn)
    d.setVar("BPN", pn)
    d.setVar("OVERRIDES", f"outpost-x86-64:outpost:class-target:pn-{pn}")
    d.setVar("__bbclasstype", "recipe")
    # Our .bbappend files for this recipe, applied the way bitbake's cache applies them.
    appends = [str(a) for a in sorted(LAYER.glob("recipes-*/*/*.bbappend"))
               if a.name.removesuffix(".bbappend").split("_")[0] == pn]
    d.setVar("__BBAPPEND", " ".join(appends))
    d = bb.parse.handle(fn, d)[""]  # parsed and finalized: anonymous Python has run
    if d.getVar("__SKIPPED"):
        raise bb.parse.SkipRecipe(d.getVar("__SKIPPED"))
    return d


def main():
    logging.getLogger("BitBake").setLevel(logging.ERROR)
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        stubs = pathlib.Path(tmp)
        (stubs / "classes").mkdir()
        for cls in STUB_CLASSES:
            (stubs / "classes" / f"{cls}.bbclass").write_text("")
        for inc in STUB_INCLUDES:
            (stubs / inc).parent.mkdir(parents=True, exist_ok=True)
            (stubs / inc).write_text("")

        try:
            base = base_datastore(stubs)
            bb.parse.siggen = bb.siggen.init(base)  # the no-op signature generator
            results.check("layer.conf, distro and machine configuration parse", True)
        except Exception as err:  # bitbake raises many types; report any
            results.check("layer.conf, distro and machine configuration parse", False, err)
            print(f"{results.passed} passed, {results.failed} failed")
            return 1
        results.check("LAYERSERIES_COMPAT is exactly wrynose",
                      base.getVar("LAYERSERIES_COMPAT_outpost") == "wrynose",
                      base.getVar("LAYERSERIES_COMPAT_outpost"))
        results.check("DEFAULTTUNE is x86-64-v2 (corei7-64), not AVX2",
                      base.getVar("DEFAULTTUNE") == "corei7-64", base.getVar("DEFAULTTUNE"))

        parsed = {}
        for recipe in sorted(LAYER.glob("recipes-*/*/*.bb")):
            rel = recipe.relative_to(LAYER)
            try:
                parsed[recipe.name] = parse_recipe(recipe, base)
                results.check(f"parse {rel}", True)
            except bb.parse.SkipRecipe as skip:
                results.check(f"parse {rel} (skipped: {skip})", True)
            except Exception as err:
                results.check(f"parse {rel}", False, err)

        # The kernel bbappend, applied to a stand-in for oe-core's linux-yocto recipe.
        kernel = stubs / "linux-yocto_6.6.bb"
        kernel.write_text('SRC_URI = "git://linux-yocto"\n')
        try:
            kd = parse_recipe(kernel, base)
            src_uri = kd.getVar("SRC_URI").split()
            results.check("linux-yocto bbappend adds the kernel fragment for outpost-x86-64",
                          "file://outpost-x86-64.cfg" in src_uri
                          and kd.getVar("KMACHINE") == "common-pc-64", src_uri)
        except Exception as err:
            results.check("linux-yocto bbappend parses", False, err)

        wks = layout.load()
        base_d = parsed.get("outpost-base_1.0.bb")
        if base_d is not None:
            groupadd = base_d.getVar("GROUPADD_PARAM:outpost-base")
            useradd = base_d.getVar("USERADD_PARAM:outpost-base")
            results.check("outpost-base: groupadd from sysusers.d", groupadd == "--system --gid 850 outpost",
                          groupadd)
            results.check("outpost-base: useradd from sysusers.d (fixed uid/gid, home, nologin)",
                          useradd == "--system --uid 850 --gid 850 --comment 'Outpost homeserver' "
                                     "--home-dir /data/outpost --no-create-home "
                                     "--shell /usr/sbin/nologin outpost", useradd)
            sed = " ".join((base_d.getVar("OUTPOST_SUBST_SED") or "").split())
            data_uuid = layout.part(wks, "data")["uuid"]
            results.check("outpost-base: substitutions use the wks data partition and the ports",
                          f"s/@DATA_PARTUUID@/{data_uuid}/g" in sed and "s/@CLIENT_PORT@/8008/g" in sed,
                          sed)
        image_d = parsed.get("outpost-image.bb")
        if image_d is not None:
            for slot in ("a", "b"):
                got = image_d.expand("${@outpost_partition(d, 'root-%s', 'uuid')}" % slot)
                results.check(f"outpost.bbclass and layout.py agree on root-{slot}'s UUID",
                              got == layout.part(wks, f"root-{slot}")["uuid"], got)
            results.check("outpost-image: UKI named after the slot",
                          image_d.getVar("UKI_FILENAME") == "outpost-a.efi", image_d.getVar("UKI_FILENAME"))
            results.check("outpost-image: squashfs, its verity hash tree and the wic disk",
                          image_d.getVar("IMAGE_FSTYPES").split() == ["squashfs", "squashfs.verity", "wic"],
                          image_d.getVar("IMAGE_FSTYPES"))
            results.check("outpost-image: wic waits for the hash tree",
                          image_d.getVar("IMAGE_TYPEDEP:wic") == "squashfs.verity")

    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
