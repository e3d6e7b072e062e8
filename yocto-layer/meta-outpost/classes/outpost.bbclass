# outpost.bbclass: read the values the Yocto build shares with the qemu test image.
#
# They live in plain files of this layer, so image/build-test-image.sh reads the very same ones:
#   files/outpost-constants.conf   KEY=value lines (ports, verity salt/UUID, kernel command line)
#   files/wic/outpost.wks.in       the partition table (see image/lib/layout.py for the rules)
#   recipes-core/outpost-base/files/rootfs/usr/lib/sysusers.d/outpost.conf   system accounts
#
# Variables set here (all read-only results):
#   OUTPOST_CLIENT_PORT, OUTPOST_FEDERATION_PORT   from outpost-constants.conf
#   OUTPOST_VERITY_SALT, OUTPOST_VERITY_UUID       from outpost-constants.conf
#   OUTPOST_DATA_PARTUUID                          the data partition's PARTUUID, from the wks
#   OUTPOST_SUBST_SED                              sed arguments replacing @CLIENT_PORT@,
#                                                  @FEDERATION_PORT@ and @DATA_PARTUUID@
# Functions for inline Python:
#   outpost_constant(d, key)            a value of outpost-constants.conf (fatal if missing)
#   outpost_partition(d, name, field)   uuid | type | size_mib of a wks partition by --part-name
#   outpost_sysusers(d)                 (groupadd, useradd) parameter strings for useradd.bbclass
#                                       from the sysusers.d file, with the fixed ids it gives
#   outpost_rauc_compatible(d)          the `compatible=` of recipes-core/rauc/files/system.conf
#                                       (the update bundle's compatible string)
# Every lookup fails the parse, loudly, when a file or key is missing.

OUTPOST_CONSTANTS_FILE = "${OUTPOST_LAYERDIR}/files/outpost-constants.conf"
OUTPOST_WKS_FILE = "${OUTPOST_LAYERDIR}/files/wic/outpost.wks.in"
OUTPOST_RAUC_SYSTEM_CONF = "${OUTPOST_LAYERDIR}/recipes-core/rauc/files/system.conf"
OUTPOST_SYSUSERS_FILE = "${OUTPOST_LAYERDIR}/recipes-core/outpost-base/files/rootfs/usr/lib/sysusers.d/outpost.conf"

def outpost_read(d, var):
    path = d.getVar(var)
    if not path or not os.path.exists(path):
        bb.fatal("outpost.bbclass: %s (%s) does not exist" % (var, path))
    bb.parse.mark_dependency(d, path)
    with open(path) as f:
        return f.read()

def outpost_constant(d, key):
    for line in outpost_read(d, 'OUTPOST_CONSTANTS_FILE').splitlines():
        if line.startswith(key + '='):
            return line[len(key) + 1:]
    bb.fatal("outpost.bbclass: %s has no %s" % (d.getVar('OUTPOST_CONSTANTS_FILE'), key))

def outpost_partition(d, name, field):
    import shlex
    for line in outpost_read(d, 'OUTPOST_WKS_FILE').splitlines():
        tokens = shlex.split(line, comments=True)
        if not tokens or tokens[0] != 'part':
            continue
        opts = {}
        it = iter(tokens[1:])
        for tok in it:
            if not tok.startswith('--') or tok == '--active':
                continue
            if '=' in tok:
                key, value = tok.split('=', 1)
                opts[key] = value
            else:
                opts[tok] = next(it, '')
        if opts.get('--part-name') != name:
            continue
        if field == 'uuid':
            return opts['--uuid'].lower()
        if field == 'type':
            return opts['--part-type'].upper()
        if field == 'size_mib':
            return opts['--fixed-size'].rstrip('M')
        bb.fatal("outpost.bbclass: unknown partition field %s" % field)
    bb.fatal("outpost.bbclass: %s has no partition named %s" % (d.getVar('OUTPOST_WKS_FILE'), name))

def outpost_sysusers(d):
    import shlex
    groups, users = [], []
    for line in outpost_read(d, 'OUTPOST_SYSUSERS_FILE').splitlines():
        fields = shlex.split(line, comments=True)
        if not fields:
            continue
        kind, name, ident = fields[0], fields[1], fields[2]
        if kind == 'g':
            groups.append('--system --gid %s %s' % (ident, name))
        elif kind == 'u':
            uid, _, gid = ident.partition(':')
            if not uid.isdigit() or not gid.isdigit():
                bb.fatal("outpost.bbclass: %s: user %s needs a fixed uid:gid" % (d.getVar('OUTPOST_SYSUSERS_FILE'), name))
            gecos, home, shell = fields[3], fields[4], fields[5]
            users.append("--system --uid %s --gid %s --comment '%s' --home-dir %s --no-create-home --shell %s %s"
                         % (uid, gid, gecos, home, shell, name))
        else:
            bb.fatal("outpost.bbclass: sysusers line type %s is not supported" % kind)
    return '; '.join(groups), '; '.join(users)

OUTPOST_CLIENT_PORT = "${@outpost_constant(d, 'CLIENT_PORT')}"
OUTPOST_FEDERATION_PORT = "${@outpost_constant(d, 'FEDERATION_PORT')}"
OUTPOST_VERITY_SALT = "${@outpost_constant(d, 'VERITY_SALT')}"
OUTPOST_VERITY_UUID = "${@outpost_constant(d, 'VERITY_UUID')}"
OUTPOST_DATA_PARTUUID = "${@outpost_partition(d, 'data', 'uuid')}"
OUTPOST_SUBST_SED = "-e s/@CLIENT_PORT@/${OUTPOST_CLIENT_PORT}/g \
                     -e s/@FEDERATION_PORT@/${OUTPOST_FEDERATION_PORT}/g \
                     -e s/@DATA_PARTUUID@/${OUTPOST_DATA_PARTUUID}/g"

def outpost_rauc_compatible(d):
    for line in outpost_read(d, 'OUTPOST_RAUC_SYSTEM_CONF').splitlines():
        if line.startswith('compatible='):
            return line[len('compatible='):].strip()
    bb.fatal("outpost.bbclass: %s has no compatible=" % d.getVar('OUTPOST_RAUC_SYSTEM_CONF'))
