# outpost_signing.bbclass: the vendor's signing keys, read from the build machine's environment.
#
# No key is ever in this repository or in the layer. The build machine names them in four
# environment variables, which kas passes to bitbake (image/kas/outpost.yml, `env:`); a plain
# bitbake needs them in BB_ENV_PASSTHROUGH_ADDITIONS (image/README.md, "Signing keys"):
#   OUTPOST_UPDATE_KEY    PEM private key that signs RAUC update bundles (outpost-bundle)
#   OUTPOST_UPDATE_CERT   its certificate: signs with the key, and is the unit's RAUC keyring
#                         (/etc/rauc/keyring.pem, public part only)
#   OUTPOST_SB_KEY        PEM private key of the vendor's Secure Boot db entry
#   OUTPOST_SB_CERT       its certificate (sbsign signs systemd-boot and the UKIs with both)
# Each must be an absolute path to a readable file. A task that needs one checks it first
# (outpost_signing_file) and stops the build with a message naming the variable, instead of
# meta-rauc's or uki.bbclass's quieter behaviour (uki.bbclass silently builds an unsigned UKI
# when UKI_SB_KEY is empty). Parsing never needs them, so `bitbake -p` and `bitbake -g` work on
# a machine without keys.
#
# The private keys' paths enter task signatures (a different key gives a different output, as
# it must); their contents are tracked through [file-checksums] where a task reads them.

OUTPOST_UPDATE_KEY ??= ""
OUTPOST_UPDATE_CERT ??= ""
OUTPOST_SB_KEY ??= ""
OUTPOST_SB_CERT ??= ""

OUTPOST_SIGNING_DOC = "see image/README.md, 'Signing keys'"

def outpost_signing_problem(d, var):
    """What is wrong with the file the environment variable `var` names (unset, not absolute,
    not a readable file), or None."""
    doc = d.getVar('OUTPOST_SIGNING_DOC')
    path = (d.getVar(var) or "").strip()
    if not path:
        return ("%s is not set: export %s=/absolute/path/to/the/file on the build machine (kas "
                "passes it to bitbake; plain bitbake needs it in BB_ENV_PASSTHROUGH_ADDITIONS); %s"
                % (var, var, doc))
    if not os.path.isabs(path):
        return "%s must be an absolute path, not %s; %s" % (var, path, doc)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return "%s names %s, which is not a readable file; %s" % (var, path, doc)
    return None

def outpost_signing_file(d, var):
    """The file the environment variable `var` names; stops the build when there is none."""
    problem = outpost_signing_problem(d, var)
    if problem:
        bb.fatal(problem)
    return d.getVar(var).strip()

python outpost_require_update_keys() {
    outpost_signing_file(d, 'OUTPOST_UPDATE_KEY')
    outpost_signing_file(d, 'OUTPOST_UPDATE_CERT')
}

python outpost_require_update_cert() {
    outpost_signing_file(d, 'OUTPOST_UPDATE_CERT')
}

python outpost_require_sb_keys() {
    outpost_signing_file(d, 'OUTPOST_SB_KEY')
    outpost_signing_file(d, 'OUTPOST_SB_CERT')
}

# Authenticode-signs the EFI binary $1 in place with the vendor's db key (sbsign, from
# sbsigntool-native). A task using it needs do_TASK[depends] += "${OUTPOST_SBSIGN_DEPENDS}" and
# do_TASK[prefuncs] += "outpost_require_sb_keys".
OUTPOST_SBSIGN_DEPENDS = "sbsigntool-native:do_populate_sysroot"
outpost_sbsign() {
    sbsign --key "${OUTPOST_SB_KEY}" --cert "${OUTPOST_SB_CERT}" --output "$1.signed" "$1"
    sbverify --cert "${OUTPOST_SB_CERT}" "$1.signed"
    mv "$1.signed" "$1"
}
