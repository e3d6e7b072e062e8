# RAUC as an Outpost unit needs it, only in the Outpost distro.
require ${@bb.utils.contains('DISTRO_FEATURES', 'outpost', 'rauc-outpost.inc', '', d)}
