#!/usr/bin/env python3
"""Update test: offline, signed A/B updates of the qemu test image, with automatic rollback.

    tests/image/update-test.py --appliance BIN [--homeserver BIN] [--work-dir DIR]

1. Makes two throw-away signing keys (the vendor's, whose certificate goes into the image's
   RAUC keyring, and another one) under the work directory: keys are never part of the
   repository.
2. Builds the test image (release 100) with the appliance CLI and the vendor certificate, then
   derives two more releases from it (image/derive-update.sh): 101, and 102 whose homeserver
   cannot start. Makes RAUC bundles (verity format, image/build-bundle.sh): 101 signed by the
   vendor, 101 signed by the other key, 101 truncated, 101 with a flipped byte in its
   signature, and 102 signed by the vendor. They go on a FAT "USB stick" labelled UPDATE.
3. One guest, provisioned on its first boot; a user's room and message are the data that must
   survive. At the serial console (as an admin would type):
   - the other key's bundle, the truncated one and the tampered one are refused (exit code 3)
     and `update status` is unchanged;
   - release 102 installs into slot b and the unit restarts: slot b fails its 3 tries (its
     homeserver never reports READY, so outpost-boot-assess reboots) and systemd-boot falls
     back to slot a by itself, with the data intact;
   - release 101 installs into slot b: it boots, answers with the data intact, and is blessed
     (good) once the homeserver is READY.
Prints the bundle size, install time, reboot-to-READY and rollback time. Every wait has a
deadline; software emulation only (TCG). The last line is "N passed, N failed".
"""

import argparse
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

boot_test = __import__("boot-test")

BOOT_DEADLINE = 420
INSTALL_DEADLINE = 900
ROLLBACK_DEADLINE = 1500
PASSWORD = boot_test.PASSWORD


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def make_keys(keys):
    keys.mkdir(parents=True, exist_ok=True)
    for name in ("vendor", "other"):
        if not (keys / f"{name}.key.pem").exists():
            run(["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "3650",
                 "-keyout", keys / f"{name}.key.pem", "-out", keys / f"{name}.cert.pem",
                 "-subj", f"/O=Outpost test/CN={name} update signing (throw-away)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_stick(path, files):
    """A FAT disk labelled UPDATE holding `files` ({name: path})."""
    size_kib = sum(p.stat().st_size for p in files.values()) // 1024 + 16 * 1024
    path.unlink(missing_ok=True)
    run(["mkfs.vfat", "-n", "UPDATE", "-C", path, str(size_kib)], stdout=subprocess.DEVNULL)
    for name, src in files.items():
        run(["mcopy", "-i", path, src, f"::{name}"])


def console_command(guest, command, timeout=120):
    out = boot_test.console_command(guest, command, timeout)
    return (out or "").replace("\r", "")


def wait_prompt_of_this_boot(guest, timeout=180):
    """After a reboot: wait for the appliance prompt printed by the console of the boot now
    running (text typed before its shell starts would be lost)."""
    text = guest.console_text()
    return guest.wait_console_after(max(text.rfind("verifying root slot"), 0), "appliance> ",
                                    timeout)


def slot_line(status, slot):
    found = re.search(rf"^slot {slot} \(.*$", status or "", re.M)
    return found.group(0) if found else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appliance", type=pathlib.Path, required=True)
    ap.add_argument("--homeserver", type=pathlib.Path, default=REPO / "target/release/homeserver")
    ap.add_argument("--work-dir", type=pathlib.Path, default=REPO / "target/update-test")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(f"update-test: stopped by signal {s}"))
    t0 = time.monotonic()
    boot_test.ensure_host_packages()
    results = boot_test.Results()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    make_keys(keys)

    # --- releases and bundles ----------------------------------------------------------------
    log("image release 100 (with the vendor certificate), then releases 101 and 102 (broken)")
    start = time.monotonic()
    build = ["bash", REPO / "image/build-test-image.sh", "--homeserver", args.homeserver,
             "--appliance", args.appliance, "--update-cert", keys / "vendor.cert.pem",
             "--image-version", "100"]
    key = subprocess.run([str(c) for c in build + ["--input-key"]], check=True,
                         capture_output=True, text=True).stdout.strip()
    key_file = work / "r100/input-key"
    reuse = key_file.exists() and key_file.read_text().strip() == key and all(
        (work / r / "image-version").exists() for r in ("r101", "r102"))
    if reuse:
        log("reusing releases 100-102: same inputs (target/update-test/r100/input-key)")
    else:
        run(build + ["--out", work / "r100"])
        broken = work / "broken-homeserver"
        broken.write_text("#!/bin/sh\necho 'this homeserver cannot start' >&2\nexit 1\n")
        run(["bash", REPO / "image/derive-update.sh", "--from", work / "r100",
             "--out", work / "r101", "--image-version", "101"])
        run(["bash", REPO / "image/derive-update.sh", "--from", work / "r100",
             "--out", work / "r102", "--image-version", "102", "--homeserver", broken])
    bundles = work / "bundles"
    bundles.mkdir(exist_ok=True)
    bundle_s = time.monotonic()
    for name, release, key in (("good", "r101", "vendor"), ("other-key", "r101", "other"),
                               ("broken", "r102", "vendor")):
        run(["bash", REPO / "image/build-bundle.sh", "--image-dir", work / release,
             "--cert", keys / f"{key}.cert.pem", "--key", keys / f"{key}.key.pem",
             "--out", bundles / f"{name}.raucb"], stdout=subprocess.DEVNULL)
    bundle_s = (time.monotonic() - bundle_s) / 3
    good = (bundles / "good.raucb").read_bytes()
    (bundles / "truncated.raucb").write_bytes(good[: len(good) // 2])
    tampered = bytearray(good)
    tampered[-200] ^= 0xFF  # inside the CMS signature at the end of the bundle
    (bundles / "tampered.raucb").write_bytes(bytes(tampered))
    del good, tampered
    bundle_size = (bundles / "good.raucb").stat().st_size
    stick = work / "update-stick.img"
    make_stick(stick, {p.name: p for p in bundles.glob("*.raucb")})
    build_s = time.monotonic() - start
    log(f"releases and bundles in {build_s:.0f} s; bundle {bundle_size / 2**20:.1f} MiB")

    # --- first boot, provisioned ------------------------------------------------------------
    unit = work / "unit"
    subprocess.run(["rm", "-rf", str(unit)], check=True)
    provision = qemu.make_provision_disk(work / "provision.img", {
        "provisioning.json": boot_test.PROVISIONING_JSON,
        "admin-password": PASSWORD.encode() + b"\n"})
    disk = work / "r100/outpost-test.img"
    guest = qemu.Guest(disk, unit, provision=provision, interactive=True, reboot=True,
                       extra_disks=[stick], lifetime=3600).start()
    ready = boot_test.wait_versions(guest, BOOT_DEADLINE)
    if not results.check("release 100 answers", ready is not None, f"see {guest.console}"):
        return finish(results, t0)
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
                      ("tampered", "with a damaged signature")):
        out = console_command(guest, f"update apply --device /dev/disk/by-label/UPDATE {name}.raucb")
        results.check(f"a bundle {why} is refused (exit code 3)",
                      "not a valid update bundle" in out and "(exit code 3)" in out, out)
        after = console_command(guest, "update status")
        results.check(f"a bundle {why}: nothing written (update status unchanged)",
                      after == before, f"before:\n{before}\nafter:\n{after}")

    # --- an update whose homeserver cannot start: rolled back after its tries ----------------
    console_len = len(guest.console_text())
    start = time.monotonic()
    guest.type("update apply --device /dev/disk/by-label/UPDATE broken.raucb --reboot\n")
    restarted = guest.wait_console_after(console_len, "Restarting ...", INSTALL_DEADLINE)
    install_broken_s = time.monotonic() - start
    results.check("release 102 installs and the unit restarts", restarted,
                  guest.console_text()[console_len:][-3000:])
    rollback_start = time.monotonic()
    deadline = rollback_start + ROLLBACK_DEADLINE
    tries = 0
    back = False
    while time.monotonic() < deadline:
        text = guest.console_text()[console_len:]
        tries = text.count("verifying root slot b")
        after_b = text[text.rfind("verifying root slot b"):] if tries else ""
        if tries >= 3 and "verifying root slot a" in after_b:
            back = True
            break
        time.sleep(2)
    results.check("slot b boots 3 times on trial, then the unit boots slot a by itself",
                  back, f"{tries} boots of slot b; see {guest.console}")
    ready = boot_test.wait_versions(guest, BOOT_DEADLINE) if back else None
    rollback_s = time.monotonic() - rollback_start
    results.check("after the rollback release 100 answers", ready is not None)
    if ready is not None:
        data_intact("after the rollback")
        wait_prompt_of_this_boot(guest)
        rolled = console_command(guest, "update status")
        results.check("update status after the rollback: slot a booted, slot b bad",
                      "version 100, good, booted" in slot_line(rolled, "a")
                      and "bad" in slot_line(rolled, "b"), rolled)

    # --- a good update ---------------------------------------------------------------------
    console_len = len(guest.console_text())
    start = time.monotonic()
    guest.type("update apply --device /dev/disk/by-label/UPDATE good.raucb --reboot\n")
    restarted = guest.wait_console_after(console_len, "Restarting ...", INSTALL_DEADLINE)
    install_s = time.monotonic() - start
    out = guest.console_text()[console_len:]
    results.check("release 101 installs (backup taken, progress shown) and the unit restarts",
                  restarted and "Backing up the data" in out and "100%" in out, out[-3000:])
    reboot_start = time.monotonic()
    ready_b = None
    deadline = reboot_start + BOOT_DEADLINE
    while time.monotonic() < deadline and ready_b is None:
        if "verifying root slot b" in guest.console_text()[console_len:]:
            left = deadline - time.monotonic()
            ready_b = boot_test.wait_versions(guest, max(left, 1))
            break
        time.sleep(2)
    reboot_s = time.monotonic() - reboot_start
    results.check("release 101 boots from slot b and answers", ready_b is not None,
                  f"see {guest.console}")
    if ready_b is not None:
        data_intact("after the update")
        wait_prompt_of_this_boot(guest)
        good_status = ""
        end = time.monotonic() + 120
        while time.monotonic() < end:
            good_status = console_command(guest, "update status")
            if "version 101, good, booted" in slot_line(good_status, "b"):
                break
            time.sleep(5)
        results.check("update status: slot b runs release 101, blessed good",
                      "version 101, good, booted" in slot_line(good_status, "b"), good_status)
    guest.kill()

    print()
    print(f"bundle size {bundle_size / 2**20:.1f} MiB (made in {bundle_s:.0f} s each); "
          f"install of release 102 {install_broken_s:.0f} s, of release 101 {install_s:.0f} s "
          f"(command typed to restart, backup included); reboot to READY on slot b "
          f"{reboot_s:.0f} s; rollback (restart to READY on slot a, 3 failed tries) "
          f"{rollback_s:.0f} s; releases and bundles built in {build_s:.0f} s")
    return finish(results, t0)


def finish(results, t0):
    print(f"whole test {time.monotonic() - t0:.0f} s (TCG, shared 2-core machine)")
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
