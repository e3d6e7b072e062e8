# RAUC's system.conf and keyring of an Outpost unit, only in the Outpost distro.
require ${@bb.utils.contains('DISTRO_FEATURES', 'outpost', 'rauc-conf-outpost.inc', '', d)}
