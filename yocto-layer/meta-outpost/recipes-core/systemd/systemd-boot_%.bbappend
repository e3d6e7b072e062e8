# The boot loader signed for Secure Boot, only in the Outpost distro.
require ${@bb.utils.contains('DISTRO_FEATURES', 'outpost', 'systemd-boot-outpost.inc', '', d)}
