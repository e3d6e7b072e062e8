# The Outpost machine's kernel configuration, only in the Outpost distro.
require ${@bb.utils.contains('DISTRO_FEATURES', 'outpost', 'linux-yocto-outpost.inc', '', d)}
