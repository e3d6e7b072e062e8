#!/usr/bin/env python3
"""Update test: offline, signed A/B updates of the qemu test image, with automatic rollback,
under UEFI Secure Boot.

    tests/image/update-test.py --appliance BIN [--homeserver BIN] [--base-image DIR]
                               [--work-dir DIR]

1. Makes throw-away keys under the work directory (keys are never part of the repository):
   the vendor's update key, whose certificate goes into the image's RAUC keyring, another
   update key, and two Secure Boot keys: the platform owner's (PK and KEK) and the vendor's
   db key, which signs systemd-boot and the unified kernel images (image/sign-secure-boot.sh).
   The owner's and the db certificates are enrolled into a copy of OVMF's variable store
   (virt-fw-vars, from tests/host-tools.sh), with Secure Boot on.
2. Releases without a second image build: the boot test's image (DIR, default target/image,
   built here by the boot test's own command when missing or built from other inputs) is the
   base. Release 100 is derived from it with the vendor certificate and 2 boot tries and gets a
   disk (image/derive-update.sh --disk); releases 101 and 102 are derived from release 100.
   Release 102's homeserver migrates the database and then cannot start: a script in its place
   sets the database's schema version (SQLite's user_version) to 9999, as a newer release's
   migration would, and exits 1 (test image only; nothing of it is in the product); all three are signed for Secure Boot (all reused while their
   inputs and keys are the same). RAUC bundles (verity format, image/build-bundle.sh): 101
   signed by the vendor, 101 signed by the other key, 101 truncated, 101 with a flipped byte in
   its signature, 101 with a flipped byte in its payload and 101 with 1 MiB cut out of its
   payload (both with the vendor's signature intact), and 102 signed by the vendor, on a FAT
   "USB stick" labelled UPDATE.
3. One unit, with Secure Boot on (its report reads the firmware's SecureBoot variable),
   provisioned on its first boot; a user's room and message are the data that must survive.
   Every reboot is cold: qemu runs with -no-reboot, so a reboot in the guest ends qemu, and the
   test powers the unit on again with the same disk and firmware variables (a warm reset under
   TCG hangs OVMF's Secure Boot build now and then, see image/lib/qemu.py). The boot counter
   lives in the kernel images' names on the ESP, which the test reads from the disk between
   boots. At the serial console (as an admin would type):
   - the other key's bundle, the truncated one, the one with a damaged signature and the two
     damaged inside their payload are refused (exit code 3) before the backup, `update status`
     is unchanged and the guest never wrote to root-b or root-b-verity (no extent of them in
     the disk's overlay);
   - release 101 installs into slot b (on trial: `+2` in its kernel image's name), boots,
     answers with the data intact, and is blessed (good) once the homeserver is READY;
   - release 102 installs into slot a and the unit restarts: slot a boots exactly 2 times, its
     counter going +2, +1-1, +0-2 across the power cycles (its homeserver never reports READY,
     so outpost-boot-assess reboots), and then the unit boots slot b (release 101) by itself.
     Release 101's homeserver would refuse the schema 102 left (too new); the rollback restores
     the backup `update apply` took before installing 102 (outpost-update-settle.service), so
     it comes up READY with the data intact, and `update status` says "rolled back from version
     102 ..., data restored from the backup of <time>" with the schema version 102 left (9999);
   - a message sent after the rollback is still there after one more power cycle: the backup is
     restored once, not at every boot of slot b.
4. A copy of release 100's disk whose factory UKI has one byte of its command line changed (the
   root hash: an attempt to boot a root that dm-verity would not check): the firmware refuses
   to load it (systemd-boot: "Access Denied") and no kernel starts.
What boot-test.py checks of a boot (hardening, firewall, verity, power button) is not repeated.
Prints each phase's time, the bundle size, install time, reboot-to-READY and rollback time.
Every wait has a deadline; software emulation only (TCG). The last line is "N passed, N failed".
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(REPO / "image/lib"))
sys.path.insert(0, str(REPO / "tests/image"))
import qemu  # noqa: E402

layout = __import__("layout")
boot_test = __import__("boot-test")

# Power-on to an answering homeserver (the boot test allows the same).
BOOT_DEADLINE = 300
# The typed `update apply` to "Restarting ..." (signature check, backup, install).
INSTALL_DEADLINE = 300
# "Restarting ..." (or the homeserver's last failure) to qemu's exit: the shutdown.
SHUTDOWN_DEADLINE = 180
# A boot of the broken slot, power-on to its reboot: boot, the homeserver's 3 failed starts
# (5 s apart), outpost-boot-assess's reboot.
TRIAL_DEADLINE = 420
# The boot tries a newly installed slot gets in this test's image (the layer's default is 3):
# the fewest that show the counter going down across power cycles before the fallback.
TRIES = 2
# Owner GUID of the enrolled Secure Boot certificates (any fixed GUID: it names who added them).
SB_OWNER_GUID = "5c2a7a0e-6f3b-4c55-9b1e-0d1f0a2b3c4d"
PASSWORD = boot_test.PASSWORD


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def sha256_file(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def ensure_host_tools():
    """Install what this test runs: the boot stage's tools (qemu, OVMF, rauc, sbsign,
    virt-fw-vars, ...) and the build stage's (derive-update.sh: squashfs-tools, veritysetup,
    objcopy, sfdisk), all rows of tests/host-tools.sh."""
    script = REPO / "tests/host-tools.sh"
    if subprocess.run(["bash", str(script), "ensure", "build", "boot"]).returncode != 0:
        sys.exit("update-test: host tools missing (see above)")


def make_keys(keys):
    """Update keys (vendor, other) and Secure Boot keys (sb-owner: PK and KEK; sb-db: signs
    the boot chain), each a self-signed certificate with its key."""
    keys.mkdir(parents=True, exist_ok=True)
    for name, bits, what in (("vendor", 3072, "update signing"), ("other", 3072, "update signing"),
                             ("sb-owner", 2048, "Secure Boot PK and KEK"),
                             ("sb-db", 2048, "Secure Boot db, boot chain signing")):
        if not (keys / f"{name}.key.pem").exists():
            run(["openssl", "req", "-x509", "-newkey", f"rsa:{bits}", "-nodes", "-days", "3650",
                 "-keyout", keys / f"{name}.key.pem", "-out", keys / f"{name}.cert.pem",
                 "-subj", f"/O=Outpost test/CN={name} {what} (throw-away)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def enroll_secure_boot(keys, out):
    """OVMF's empty variable store with the owner's PK and KEK and the vendor's db enrolled
    and Secure Boot on."""
    run([REPO / "target/host-venv/bin/virt-fw-vars", "-i", qemu.OVMF_VARS, "-o", out,
         "--set-pk", SB_OWNER_GUID, keys / "sb-owner.cert.pem",
         "--add-kek", SB_OWNER_GUID, keys / "sb-owner.cert.pem",
         "--add-db", SB_OWNER_GUID, keys / "sb-db.cert.pem", "--sb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_releases(base, keys, work):
    """Releases 100 (with a disk), 101 and 102 (broken), derived from the base image and
    signed for Secure Boot; reused while the base, the scripts and the keys are the same.
    Returns the three release directories."""
    releases = [work / r for r in ("r100", "r101", "r102")]
    broken = work / "broken-homeserver"
    # Release 102's homeserver: migrates the schema past anything release 101 knows, then fails
    # (runs as the homeserver, in its sandbox). The homeserver truncates its log (-wal) when it
    # stops, so the header's user_version (big-endian, bytes 60-63) is the schema version.
    broken_text = (
        "#!/bin/sh\n"
        "# Test only (tests/image/update-test.py): a release whose homeserver migrates the\n"
        "# database to schema version 9999 and then cannot start.\n"
        "db=/data/outpost/homeserver.db\n"
        "[ ! -s \"$db-wal\" ] || echo \"warning: $db-wal is not empty\" >&2\n"
        "printf '\\000\\000\\047\\017' | dd of=\"$db\" bs=1 seek=60 count=4 conv=notrunc "
        "status=none\n"
        "echo 'this homeserver migrated the database to schema version 9999 and cannot start' >&2\n"
        "exit 1\n")
    key = hashlib.sha256("\n".join([
        (base / "input-key").read_text().strip(), f"tries={TRIES}", broken_text,
        *(sha256_file(REPO / "image" / f) for f in ("derive-update.sh", "sign-secure-boot.sh")),
        *(sha256_file(keys / f"{k}.cert.pem") for k in ("vendor", "sb-db")),
    ]).encode()).hexdigest()
    key_file = work / "releases-key"
    if key_file.exists() and key_file.read_text().strip() == key and all(
            (r / "secure-boot-cert").exists() for r in releases):
        log(f"reusing releases 100-102: same inputs and keys ({key_file})")
        return releases
    key_file.unlink(missing_ok=True)
    log(f"releases 100-102 from {base}")
    broken.write_text(broken_text)
    derive = ["bash", REPO / "image/derive-update.sh"]
    run(derive + ["--from", base, "--out", releases[0], "--image-version", "100",
                  "--update-cert", keys / "vendor.cert.pem", "--boot-tries", str(TRIES),
                  "--disk"])
    # Derived from release 100 before it is signed (editing a signed UKI voids its signature).
    run(derive + ["--from", releases[0], "--out", releases[1], "--image-version", "101"])
    run(derive + ["--from", releases[0], "--out", releases[2], "--image-version", "102",
                  "--homeserver", broken])
    for release in releases:
        run(["bash", REPO / "image/sign-secure-boot.sh", "--image-dir", release,
             "--key", keys / "sb-db.key.pem", "--cert", keys / "sb-db.cert.pem"])
    key_file.write_text(key + "\n")
    return releases


def tampered_disk(release, work):
    """A copy of `release`'s disk whose factory UKI has one byte of its command line changed
    (a digit of the root hash), written into the ESP as a new file. `work` starts empty: a
    console log or overlay left by an earlier run must not stand in for this boot's."""
    run(["rm", "-rf", work])
    work.mkdir(parents=True)
    disk, esp, uki = work / "tampered.img", work / "esp.vfat", work / "uki.efi"
    run(["cp", "--sparse=always", release / "outpost-test.img", disk])
    run(["cp", release / "esp.vfat", esp])
    run(["mcopy", "-n", "-i", esp, "::EFI/Linux/outpost-1-a.efi", uki])
    data = bytearray(uki.read_bytes())
    roothash = (release / "roothash").read_text().strip().encode()
    at = data.find(roothash)
    assert at > 0 and data.count(roothash) == 1, "the UKI's command line names the root hash once"
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    uki.write_bytes(bytes(data))
    run(["mcopy", "-o", "-i", esp, uki, "::EFI/Linux/outpost-1-a.efi"])
    start = layout.part(layout.load(), "esp")["start"]
    run(["dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={start // 1048576}",
         "conv=notrunc,sparse", "status=none"])
    esp.unlink()
    return disk


def make_stick(path, files):
    """A FAT disk labelled UPDATE holding `files` ({name: path})."""
    size_kib = sum(p.stat().st_size for p in files.values()) // 1024 + 16 * 1024
    path.unlink(missing_ok=True)
    run(["mkfs.vfat", "-n", "UPDATE", "-C", path, str(size_kib)], stdout=subprocess.DEVNULL)
    for name, src in files.items():
        run(["mcopy", "-i", path, src, f"::{name}"])


def esp_ukis(guest):
    """The kernel images' names in the ESP of the guest's disk (its overlay), read while qemu
    is stopped: the boot counter systemd-boot keeps in them, as the next power-on will see it."""
    esp = layout.part(layout.load(), "esp")
    mib = 1048576
    raw = guest.workdir / "esp-read.raw"
    raw.unlink(missing_ok=True)
    # qemu-img dd counts `count` from the start of the input, skipped blocks included.
    run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", f"bs={mib}", f"skip={esp['start'] // mib}",
         f"count={(esp['start'] + esp['size']) // mib}", f"if={guest.overlay}", f"of={raw}"])
    listing = subprocess.run(["mdir", "-b", "-i", str(raw), "::EFI/Linux"], check=True,
                             capture_output=True, text=True).stdout
    raw.unlink()
    return sorted(line.rsplit("/", 1)[-1] for line in listing.split() if line.endswith(".efi"))


def written_in(guest, *parts):
    """The extents of the partitions `parts` the guest has written (qemu allocated them in its
    overlay: the base disk holds nothing there), as (partition, start, length); read with
    qemu-img's shared (-U) access while the guest runs."""
    extents = json.loads(subprocess.run(
        ["qemu-img", "map", "-U", "--output=json", "-f", "qcow2", str(guest.overlay)],
        check=True, capture_output=True, text=True).stdout)
    wks, found = layout.load(), []
    for name in parts:
        part = layout.part(wks, name)
        lo, hi = part["start"], part["start"] + part["size"]
        found += [(name, e["start"], e["length"]) for e in extents
                  if e.get("depth") == 0 and e.get("present", True)
                  and e["start"] < hi and e["start"] + e["length"] > lo]
    return found


def uki_of(names, slot):
    """The name of `slot`'s kernel image among `names` ("" if it has none)."""
    found = [n for n in names if re.fullmatch(rf"outpost-\d+-{slot}(\+\d+(-\d+)?)?\.efi", n)]
    return found[0] if len(found) == 1 else ""


def console_command(guest, command, timeout=120):
    out = boot_test.console_command(guest, command, timeout)
    return (out or "").replace("\r", "")


def slot_line(status, slot):
    found = re.search(rf"^slot {slot} \(.*$", status or "", re.M)
    return found.group(0) if found else ""


def booted_slot(guest, timeout):
    """The root slot this boot's initramfs verifies ("a" or "b"), None if none within
    `timeout` (or qemu ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"verifying root slot ([ab])\b", guest.console_text())
        if found:
            return found.group(1)
        if not guest.running():
            return None
        time.sleep(1)
    return None


def cert_sha256(cert):
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def lockup_hint(guest):
    """What this boot's console says about a guest that stopped answering: a kernel lockup
    (seen under TCG on a loaded host: ksoftirqd spinning in virtio-net's receive path) is named
    outright."""
    text = guest.console_text()
    for needle in ("soft lockup", "self-detected stall", "Kernel panic"):
        at = text.find(needle)
        if at >= 0:
            return f"the guest kernel reports '{needle}': {text[max(at - 200, 0):at + 600]!r}"
    return f"see {guest.console}"


class Phases:
    """Wall-clock time of each phase, printed as it ends and summed up at the end."""

    def __init__(self):
        self.times = []
        self.start = time.monotonic()

    def end(self, name):
        now = time.monotonic()
        self.times.append((name, now - self.start))
        log(f"phase '{name}': {now - self.start:.0f} s")
        self.start = now

    def summary(self):
        return "; ".join(f"{name} {secs:.0f} s" for name, secs in self.times)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appliance", type=pathlib.Path, required=True)
    ap.add_argument("--homeserver", type=pathlib.Path, default=REPO / "target/release/homeserver")
    ap.add_argument("--base-image", type=pathlib.Path, default=REPO / "target/image",
                    help="the boot test's image directory (built there when missing or stale)")
    ap.add_argument("--work-dir", type=pathlib.Path, default=REPO / "target/update-test")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(f"update-test: stopped by signal {s}"))
    t0 = time.monotonic()
    ensure_host_tools()
    results = boot_test.Results()
    phases = Phases()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    make_keys(keys)
    sb_vars = work / "OVMF_VARS.secure-boot.fd"
    enroll_secure_boot(keys, sb_vars)
    phases.end("keys and Secure Boot enrollment")

    # --- releases and bundles ----------------------------------------------------------------
    # The boot test's image, built by the boot test's command (so either test reuses the other's).
    boot_test.build_or_reuse(argparse.Namespace(image_dir=args.base_image,
                                                homeserver=args.homeserver,
                                                appliance=args.appliance, rebuild=False))
    r100, _, _ = make_releases(args.base_image, keys, work)
    phases.end("releases 100-102 (derived from the boot test's image, signed for Secure Boot)")
    bundles = work / "bundles"
    run(["rm", "-rf", bundles])
    bundles.mkdir()
    bundle_s = time.monotonic()
    for name, release, key in (("good", "r101", "vendor"), ("other-key", "r101", "other"),
                               ("broken", "r102", "vendor")):
        run(["bash", REPO / "image/build-bundle.sh", "--image-dir", work / release,
             "--cert", keys / f"{key}.cert.pem", "--key", keys / f"{key}.key.pem",
             "--out", bundles / f"{name}.raucb"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    bundle_s = (time.monotonic() - bundle_s) / 3
    good = (bundles / "good.raucb").read_bytes()
    (bundles / "truncated.raucb").write_bytes(good[: len(good) // 2])
    tampered = bytearray(good)
    tampered[-200] ^= 0xFF  # inside the CMS signature at the end of the bundle
    (bundles / "tampered.raucb").write_bytes(bytes(tampered))
    # Inside the payload, the signature intact: one byte of the root squashfs changed, and
    # 1 MiB cut out of the squashfs (hash tree and signature kept, so the file still ends in
    # a valid signature over the manifest). `rauc info` accepts both; only the dm-verity hash
    # tree the manifest's root hash names tells.
    tampered = bytearray(good)
    tampered[len(good) // 3] ^= 0x01
    (bundles / "payload-byte.raucb").write_bytes(bytes(tampered))
    cut = len(good) // 4
    (bundles / "payload-cut.raucb").write_bytes(good[:cut] + good[cut + 2**20:])
    del good, tampered
    bundle_size = (bundles / "good.raucb").stat().st_size
    stick = work / "update-stick.img"
    make_stick(stick, {p.name: p for p in bundles.glob("*.raucb")})
    phases.end("bundles and the USB stick")
    log(f"bundle {bundle_size / 2**20:.1f} MiB")

    # --- first boot, provisioned, Secure Boot on --------------------------------------------
    unit = work / "unit"
    subprocess.run(["rm", "-rf", str(unit)], check=True)
    provision = qemu.make_provision_disk(work / "provision.img", {
        "provisioning.json": boot_test.PROVISIONING_JSON,
        "admin-password": PASSWORD.encode() + b"\n"})
    guest = qemu.Guest(r100 / "outpost-test.img", unit, provision=provision, interactive=True,
                       extra_disks=[stick], lifetime=1200, secure_boot_vars=sb_vars).start()
    ready = boot_test.wait_versions(guest, BOOT_DEADLINE)
    if not results.check("release 100 answers, booted with Secure Boot on", ready is not None,
                         lockup_hint(guest)):
        return finish(results, t0, phases)
    report = guest.read_report(120) or {}
    results.check("Secure Boot is on (the firmware's SecureBoot variable is 1)",
                  report.get("efi.secure_boot") == "1"
                  and "Secure boot enabled" in guest.console_text(),
                  f"efi.secure_boot={report.get('efi.secure_boot')!r}")
    results.check("the console is at the appliance prompt", guest.wait_console("appliance> ", 120))
    status, reply = boot_test.login(guest.port, "admin", PASSWORD)
    token = reply.get("access_token") if status == 200 else None
    room = event = None
    if token:
        status, reply = boot_test.http(guest.port, "POST", "/_matrix/client/v3/createRoom",
                                       {"name": "kept across updates"}, token, timeout=60)
        room = reply.get("room_id") if status == 200 else None
        if room:
            status, reply = boot_test.http(
                guest.port, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/u1",
                {"msgtype": "m.text", "body": "before the update"}, token, timeout=60)
            event = reply.get("event_id") if status == 200 else None
    results.check("the admin logs in, creates a room and sends a message", bool(room and event),
                  f"{status} {reply}")
    phases.end("first boot to READY, data written")

    def data_intact(label):
        status, reply = boot_test.login(guest.port, "admin", PASSWORD)
        tok = reply.get("access_token") if status == 200 else None
        if tok and room and event:
            status, reply = boot_test.http(guest.port, "GET",
                                           f"/_matrix/client/v3/rooms/{room}/event/{event}",
                                           token=tok)
        results.check(f"{label}: the admin logs in and the message is still there",
                      status == 200 and reply.get("content", {}).get("body") == "before the update",
                      f"{status} {reply}")

    before = console_command(guest, "update status")
    results.check("update status: slot a runs release 100, good",
                  "version 100, good, booted" in slot_line(before, "a"), before)

    # --- bundles that must be refused ---------------------------------------------------------
    for name, why in (("other-key", "signed with another key"), ("truncated", "truncated"),
                      ("tampered", "with a damaged signature"),
                      ("payload-byte", "with a byte of its payload changed (signature intact)"),
                      ("payload-cut", "with 1 MiB cut out of its payload (signature intact)")):
        out = console_command(guest,
                              f"update apply --device /dev/disk/by-label/UPDATE {name}.raucb")
        payload = name.startswith("payload")
        results.check(f"a bundle {why} is refused (exit code 3)",
                      "not a valid update bundle" in out and "(exit code 3)" in out
                      and (not payload or "does not match its signed manifest" in out)
                      and "Backing up" not in out, out)
    after = console_command(guest, "update status")
    results.check("the refused bundles wrote nothing (update status unchanged)",
                  after == before, f"before:\n{before}\nafter:\n{after}")
    written = written_in(guest, "root-b", "root-b-verity")
    results.check("the refused bundles wrote nothing to the inactive slot (root-b and its hash "
                  "partition never written)", not written, written[:10])
    phases.end("five bundles refused")

    def install(bundle, slot, label):
        """Types `update apply … --reboot` and follows it to qemu's exit. Returns the seconds
        from the command to "Restarting ...", or None; checks the new slot is on trial."""
        start = time.monotonic()
        console_len = len(guest.console_text())
        guest.type(f"update apply --device /dev/disk/by-label/UPDATE {bundle} --reboot\n")
        restarted = guest.wait_console_after(console_len, "Restarting ...", INSTALL_DEADLINE)
        install_s = time.monotonic() - start
        out = guest.console_text()[console_len:]
        ok = results.check(f"{label} installs (backup taken, progress shown) and the unit restarts",
                           restarted and "Backing up the data" in out and "100%" in out,
                           out[-3000:])
        ok = ok and results.check(f"{label}: the unit reboots (qemu ends: a cold restart follows)",
                                  guest.wait_exit(SHUTDOWN_DEADLINE) and guest.rebooted(),
                                  guest.console_text()[-2000:])
        if not ok:
            return None
        names = esp_ukis(guest)
        results.check(f"{label}: slot {slot}'s kernel image is on trial with {TRIES} tries",
                      re.fullmatch(rf"outpost-\d+-{slot}\+{TRIES}\.efi", uki_of(names, slot))
                      is not None, f"ESP: {names}")
        return install_s

    # --- a good update: release 101 into slot b ---------------------------------------------
    install_s = install("good.raucb", "b", "release 101")
    phases.end("install of release 101")
    if install_s is None:
        guest.kill()
        return finish(results, t0, phases)
    restart_at = time.monotonic()
    guest.power_cycle()
    slot = booted_slot(guest, BOOT_DEADLINE)
    ready_b = boot_test.wait_versions(guest, BOOT_DEADLINE) if slot == "b" else None
    reboot_s = time.monotonic() - restart_at
    results.check("release 101 boots from slot b (signed UKI, Secure Boot on) and answers",
                  ready_b is not None, f"booted slot {slot}; {lockup_hint(guest)}")
    if ready_b is None:
        guest.kill()
        return finish(results, t0, phases)
    data_intact("after the update")
    guest.wait_console("appliance> ", 120)
    good_status = ""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        good_status = console_command(guest, "update status")
        if "version 101, good, booted" in slot_line(good_status, "b"):
            break
        time.sleep(5)
    results.check("update status: slot b runs release 101, blessed good",
                  "version 101, good, booted" in slot_line(good_status, "b"), good_status)
    phases.end("power-on into release 101, READY, blessed")

    # --- an update whose homeserver cannot start: rolled back after its tries ----------------
    install_broken_s = install("broken.raucb", "a", "release 102 (broken)")
    phases.end("install of release 102 (broken)")
    if install_broken_s is None:
        guest.kill()
        return finish(results, t0, phases)
    rollback_start = time.monotonic()
    slots, counters = [], []
    while len(slots) <= TRIES:
        guest.power_cycle()
        slot = booted_slot(guest, BOOT_DEADLINE)
        slots.append(slot)
        if slot != "a":
            break
        if not (guest.wait_exit(TRIAL_DEADLINE) and guest.rebooted()):
            break
        counters.append(uki_of(esp_ukis(guest), "a"))
    expected = [f"+{TRIES - n}-{n}" for n in range(1, TRIES + 1)]
    results.check(f"slot a boots {TRIES} times on trial, then the unit boots slot b by itself",
                  slots == ["a"] * TRIES + ["b"], f"slots booted {slots}; {lockup_hint(guest)}")
    results.check("each failed try is counted in slot a's kernel image name across power cycles "
                  f"({', '.join(expected)})",
                  [re.sub(r"^outpost-\d+-a|\.efi$", "", c) for c in counters] == expected,
                  f"slot a's kernel image after each try: {counters}")
    ready = boot_test.wait_versions(guest, BOOT_DEADLINE) if slots[-1] == "b" else None
    rollback_s = time.monotonic() - rollback_start
    results.check("after the rollback release 101 answers (the pre-update backup restored over "
                  "the schema release 102 migrated)", ready is not None, lockup_hint(guest))
    if ready is not None:
        data_intact("after the rollback")
        guest.wait_console("appliance> ", 120)
        rolled = console_command(guest, "update status")
        results.check("update status after the rollback: slot b booted and good, slot a bad",
                      "version 101, good, booted" in slot_line(rolled, "b")
                      and "bad" in slot_line(rolled, "a"), rolled)
        results.check("update status names the rollback and the restored backup, and the schema "
                      "release 102 had migrated to",
                      re.search(r"^rolled back from version 102 to 101 at .*, data restored from "
                                r"the backup of \d{4}-\d\d-\d\d \d\d:\d\d UTC .*schema version "
                                r"9999 as the failed release left it", rolled, re.M) is not None
                      and "update pending" not in rolled, rolled)
    phases.end(f"rollback ({TRIES} failed tries, then READY on slot b)")

    # --- the backup is restored once: data written after the rollback stays ----------------
    after_id = None
    if ready is not None:
        status, reply = boot_test.login(guest.port, "admin", PASSWORD)
        tok = reply.get("access_token") if status == 200 else None
        if tok and room:
            status, reply = boot_test.http(
                guest.port, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/u2",
                {"msgtype": "m.text", "body": "after the rollback"}, tok, timeout=60)
            after_id = reply.get("event_id") if status == 200 else None
        results.check("a message is sent after the rollback", after_id is not None,
                      f"{status} {reply}")
    if after_id:
        guest.power_cycle()  # a power cut: an acknowledged write survives it
        slot = booted_slot(guest, BOOT_DEADLINE)
        again = boot_test.wait_versions(guest, BOOT_DEADLINE) if slot == "b" else None
        status, reply = (0, {})
        if again is not None:
            status, reply = boot_test.login(guest.port, "admin", PASSWORD)
            tok = reply.get("access_token") if status == 200 else None
            if tok:
                status, reply = boot_test.http(
                    guest.port, "GET", f"/_matrix/client/v3/rooms/{room}/event/{after_id}",
                    token=tok)
        results.check("after one more power-on of slot b the message sent after the rollback is "
                      "still there (the backup was not restored again)",
                      status == 200 and reply.get("content", {}).get("body")
                      == "after the rollback", f"booted slot {slot}: {status} {reply}")
    guest.kill()
    phases.end("one more power-on: no second restore")

    # --- Secure Boot: a modified kernel image is refused by the firmware -------------------
    disk = tampered_disk(r100, work / "tampered")
    tguest = qemu.Guest(disk, work / "tampered/unit", secure_boot_vars=sb_vars,
                        lifetime=300).start()
    stopped = tguest.wait_console("No bootable option or device was found", 240)
    text = tguest.console_text()
    tguest.kill()
    results.check("a UKI with a changed command line is refused by the firmware, no kernel runs",
                  stopped and "Error loading \\EFI\\Linux\\outpost-1-a.efi: Access Denied" in text
                  and "EFI stub" not in text and "Linux version" not in text, text[-2000:])
    phases.end("boot of a tampered UKI under Secure Boot")

    print()
    print(f"bundle size {bundle_size / 2**20:.1f} MiB (made in {bundle_s:.0f} s each); "
          f"install of release 101 {install_s:.0f} s, of release 102 {install_broken_s:.0f} s "
          f"(command typed to restart, backup included); power-on to READY on slot b "
          f"{reboot_s:.0f} s; rollback (power-on after the install to READY on slot b, "
          f"{TRIES} failed tries) {rollback_s:.0f} s")
    return finish(results, t0, phases)


def finish(results, t0, phases):
    print(f"phases: {phases.summary()}")
    print(f"whole test {time.monotonic() - t0:.0f} s (TCG); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
