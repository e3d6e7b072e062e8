# oe-core's reproducibility test, run on the Outpost image: everything outpost-image needs is
# built twice, once from an empty sstate, and every package of the two builds is compared.
#
#   kas shell image/kas/outpost.yml:image/kas/selftest.yml -c "oe-selftest -r outpost_reproducible"
#
# The disk image itself is compared byte for byte by two `kas build`s (image/README.md).

from oeqa.selftest.cases.reproducible import ReproducibleTests


class OutpostReproducibleTests(ReproducibleTests):
    targets = ["outpost-image"]
    package_classes = ["ipk"]
    # Both builds from scratch: the point is to prove the image, not to save time.
    build_from_sstate = False
