# The release's version in /etc/os-release, only in the Outpost distro.
require ${@bb.utils.contains('DISTRO_FEATURES', 'outpost', 'os-release-outpost.inc', '', d)}
