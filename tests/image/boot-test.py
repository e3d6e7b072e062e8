#!/usr/bin/env python3
"""Boot test of the Outpost qemu test image.

    tests/image/boot-test.py [--image-dir DIR] [--homeserver BIN] [--appliance BIN] [--rebuild]

1. Builds the test image with image/build-test-image.sh, or reuses the one in DIR when it was
   built from the same inputs (its input-key matches).
2. Checks the disk's GPT against the layout in the Yocto layer's wks file.
3. First boot, with a PROVISION disk: the unit provisions itself, the homeserver answers
   /_matrix/client/versions over HTTPS on port 443 through a host forward on 127.0.0.1,
   trusting only the unit CA (taken from the guest's data dir through the unit's report; with
   --appliance also compared with `appliance tls client ca` at the console and with /ca.crt of
   the plain-HTTP CA listener on port 80); a client trusting other CAs is refused; a user
   creates a room and sends a message. With --appliance the image carries the appliance CLI and the disk holds
   provisioning.json + admin-password (`appliance setup --from`), and the user is that first
   admin; without it the disk holds a homeserver.toml with open registration and the user
   registers. The unit's own report (second serial port) must show the service
   running as its dedicated user under the hardened unit, the root read-only on dm-verity, /data
   on the data partition, the firewall loaded, no failed units, no SSH, root locked.
4. ACPI power button: the unit shuts down cleanly.
5. Second boot, without the PROVISION disk: the same user logs in and reads the same message.
6. Tamper: one byte flipped in root slot A; the initramfs refuses that root and the homeserver
   never answers.
7. Two units (with --appliance): two guests provisioned from their own PROVISION disks; at each
   serial console the admin exports the unit's card and reads its fingerprint, then imports the
   other unit's card (typed in, fingerprint checked); a room on A is joined from B and messages
   cross both ways over the link between them, through both firewalls.

Every wait has a deadline and every qemu is killed on exit. Software emulation only (TCG).
The last line is "N passed, N failed".
"""

import argparse
import base64
import json
import os
import pathlib
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(REPO / "image/lib"))
import layout  # noqa: E402
import qemu  # noqa: E402

BUILD = REPO / "image/build-test-image.sh"
BOOT_DEADLINE = 300  # seconds from power-on to an answering homeserver, under TCG
POWERDOWN_DEADLINE = 120
TAMPER_DEADLINE = 180
PROVISIONING_JSON = b"""\
{
  "version": 1,
  "server_name": "unit-a.test",
  "network": {
    "client_listen": "0.0.0.0:443",
    "federation_listen": "0.0.0.0:8448",
    "federation_endpoints": ["10.0.2.15:8448"],
    "public_names": ["127.0.0.1"],
    "client_tls": "unit-ca",
    "ca_http_listen": "0.0.0.0:80"
  },
  "admin": {"user": "admin"}
}
"""
PASSWORD = "correct horse battery"

PROVISION_CONFIG = b"""\
# Written by tests/image/boot-test.py onto the PROVISION disk.
server_name = "unit-a.test"
data_dir = "/data/outpost"

[listen]
client = "0.0.0.0:443"
tls = "unit-ca"
public_names = ["127.0.0.1"]
public_base_url = "https://127.0.0.1"

[registration]
enabled = true
"""


class Results:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok      {name}")
        else:
            self.failed += 1
            print(f"FAILED  {name}{': ' + detail if detail else ''}")
        return ok


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_host_packages():
    """Install what this test runs (qemu, socat, OVMF, FAT tools), listed with their packages
    in tests/host-tools.sh, which installs qemu-system-x86 and qemu-utils as one set and checks
    every command after the install."""
    script = pathlib.Path(__file__).resolve().parents[1] / "host-tools.sh"
    if subprocess.run(["bash", str(script), "ensure", "boot"]).returncode != 0:
        sys.exit("boot-test: host tools missing (see above)")


# The TLS context of each forwarded client port: trusting only that guest's unit CA, checking
# the certificate for 127.0.0.1. A port with none trusts nothing, so nothing answers on it.
CONTEXTS = {}


def unit_ca_context(ca_pem):
    """A client context that trusts only `ca_pem`, as a user's device given the unit CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


def http(port, method, path, body=None, token=None, timeout=10, context=None):
    """One HTTPS request to the guest's client API through the 127.0.0.1 forward. Returns
    (status, json body); (None, error text) when the connection itself failed (a refused
    certificate included)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = context or CONTEXTS.get(port) or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError) as err:
        return None, str(err)


def guest_ca(guest, timeout):
    """The unit CA PEM from the guest's report (its data dir's tls/ca.pem), or None."""
    report = guest.read_report(timeout)
    encoded = (report or {}).get("tls.ca", "")
    try:
        return base64.b64decode(encoded).decode() if encoded else None
    except ValueError:
        return None


def wait_versions(guest, deadline_s):
    """Poll /versions over HTTPS until it answers, qemu exits, or the deadline passes, trusting
    only the unit CA the guest reports once its homeserver started. Returns the seconds since
    power-on, or None."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and guest.running():
        if guest.port not in CONTEXTS:
            ca = guest_ca(guest, 2)
            if ca is None:
                continue
            CONTEXTS[guest.port] = unit_ca_context(ca)
        status, body = http(guest.port, "GET", "/_matrix/client/versions", timeout=5)
        if status == 200 and "versions" in body:
            return guest.elapsed()
        time.sleep(2)
    return None


def register(port, user, password):
    body = {"username": user, "password": password, "inhibit_login": False}
    status, reply = http(port, "POST", "/_matrix/client/v3/register", body)
    if status == 401 and "session" in reply:
        body["auth"] = {"type": "m.login.dummy", "session": reply["session"]}
        status, reply = http(port, "POST", "/_matrix/client/v3/register", body, timeout=60)
    return status, reply


def login(port, user, password):
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password}
    return http(port, "POST", "/_matrix/client/v3/login", body, timeout=60)


def build_or_reuse(args):
    cmd = ["bash", str(BUILD), "--out", str(args.image_dir), "--homeserver", str(args.homeserver)]
    if args.appliance:
        cmd += ["--appliance", str(args.appliance)]
    key = subprocess.run(cmd + ["--input-key"], check=True, capture_output=True,
                         text=True).stdout.strip()
    disk = args.image_dir / "outpost-test.img"
    key_file = args.image_dir / "input-key"
    if not args.rebuild and disk.exists() and key_file.exists() and \
            key_file.read_text().strip() == key:
        log(f"reusing {disk} (same inputs)")
        return disk, 0.0
    log("building the test image")
    start = time.monotonic()
    subprocess.run(["nice", *cmd], check=True, timeout=1800)
    return disk, time.monotonic() - start


def report_checks(results, report, boot):
    r = report or {}
    results.check(f"boot {boot}: unit report received", report is not None)
    if report is None:
        return
    results.check(f"boot {boot}: homeserver.service active (READY=1 received)",
                  r.get("unit.ActiveState") == "active" and r.get("unit.SubState") == "running",
                  f"{r.get('unit.ActiveState')}/{r.get('unit.SubState')}")
    results.check(f"boot {boot}: Type=notify with a watchdog",
                  r.get("unit.Type") == "notify" and r.get("unit.WatchdogUSec") not in ("", "0", "infinity"),
                  f"Type={r.get('unit.Type')} WatchdogUSec={r.get('unit.WatchdogUSec')}")
    results.check(f"boot {boot}: runs as the dedicated user outpost (uid 850)",
                  r.get("proc.user") == "outpost" and r.get("proc.uid", "").split() == ["850"] * 4,
                  f"user={r.get('proc.user')} uid={r.get('proc.uid')}")
    results.check(f"boot {boot}: hardened (NoNewPrivileges, ProtectSystem=strict, seccomp, no caps)",
                  r.get("unit.NoNewPrivileges") == "yes" and r.get("proc.no_new_privs") == "1"
                  and r.get("unit.ProtectSystem") == "strict" and r.get("proc.seccomp") == "2"
                  and int(r.get("proc.cap_eff", "1"), 16) == 0,
                  f"NNP={r.get('unit.NoNewPrivileges')}/{r.get('proc.no_new_privs')} "
                  f"ProtectSystem={r.get('unit.ProtectSystem')} seccomp={r.get('proc.seccomp')} "
                  f"CapEff={r.get('proc.cap_eff')}")
    root = r.get("root.mount", "")
    results.check(f"boot {boot}: root is read-only squashfs on the dm-verity device",
                  root.startswith("/dev/mapper/root squashfs ro") and r.get("root.writable") == "no",
                  f"{root!r} writable={r.get('root.writable')}")
    verity = r.get("root.verity", "")
    roothash = (REPO_IMAGE_DIR / "roothash").read_text().strip()
    results.check(f"boot {boot}: dm-verity active and verified with the image's root hash",
                  "type=VERITY" in verity and "status=verified" in verity and roothash in verity,
                  verity)
    data_uuid = layout.part(layout.load(), "data")["uuid"]
    data = r.get("data.mount", "")
    results.check(f"boot {boot}: /data is the data partition (ext4, nosuid,nodev,noexec)",
                  data.startswith("/dev/vda6 ext4") and all(o in data for o in ("nosuid", "nodev", "noexec")),
                  f"{data!r} (partition {data_uuid})")
    results.check(f"boot {boot}: data dir owned by outpost, mode 700",
                  r.get("data.outpost") == "outpost:outpost 700", r.get("data.outpost", ""))
    results.check(f"boot {boot}: firewall loaded, input policy drop",
                  "inet outpost" in r.get("firewall.tables", "") and r.get("firewall.input_policy") == "drop",
                  f"{r.get('firewall.tables')} policy={r.get('firewall.input_policy')}")
    results.check(f"boot {boot}: no failed units", r.get("units.failed", "").strip() == "",
                  r.get("units.failed", ""))
    results.check(f"boot {boot}: no SSH daemon; root has no password and the appliance shell",
                  r.get("sshd", "").strip() == "" and r.get("root.password") in ("*", "!")
                  and r.get("root.shell") == "/usr/libexec/outpost/admin-shell",
                  f"sshd={r.get('sshd')!r} root={r.get('root.password')!r} shell={r.get('root.shell')!r}")


def unit_provisioning(name):
    """The provisioning file of a unit in the two-unit test. Each guest reaches the other at
    10.0.2.100:8448 (a guest forward to the other's host forward). qemu's user-mode network
    NATs what arrives through a host forward: the other unit's connections come from the
    gateway address 10.0.2.2, so the card lists that address too, as a second endpoint: that
    puts it into the peer's firewall source set (it is dialled only if the first fails)."""
    return json.dumps({
        "version": 1,
        "server_name": name,
        "network": {
            "client_listen": "0.0.0.0:443",
            "federation_listen": "0.0.0.0:8448",
            "federation_endpoints": ["10.0.2.100:8448", "10.0.2.2:8448"],
            "public_names": ["127.0.0.1"],
        },
        "admin": {"user": "admin"},
    }, indent=2).encode()


FINGERPRINT = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){4}\b")


def console_command(guest, command, timeout=120):
    """Types one appliance command at the guest's serial console and returns what it printed
    (the console text after the command line, up to the next prompt)."""
    before = len(guest.console_text())
    guest.type(command + "\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = guest.console_text()[before:]
        start = text.find(command)
        if start >= 0:
            rest = text[start + len(command):]
            end = rest.find("appliance> ")
            if end >= 0:
                return rest[:end]
        time.sleep(1)
    return None


def card_of(output):
    """The peer card JSON in a `peer export` output (the console may add carriage returns)."""
    if not output:
        return None
    text = output.replace("\r", "")
    start, end = text.find("{"), text.rfind("}")
    try:
        return json.loads(text[start:end + 1]) if 0 <= start < end else None
    except ValueError:
        return None


def two_units(args, disk, results):
    """Two guests federating over the link between them (see unit_provisioning)."""
    ports = {name: (qemu.free_port(), qemu.free_port()) for name in ("a", "b")}
    guests = {}
    for name, other in (("a", "b"), ("b", "a")):
        workdir = args.work_dir / f"two-{name}"
        files = {"provisioning.json": unit_provisioning(f"unit-{name}.test"),
                 "admin-password": PASSWORD.encode() + b"\n"}
        provision = qemu.make_provision_disk(args.work_dir / f"provision-{name}.img", files)
        client_port, fed_port = ports[name]
        guests[name] = qemu.Guest(disk, workdir, provision=provision, port=client_port,
                                  fed_port=fed_port, interactive=True,
                                  guest_forwards=[("10.0.2.100", 8448, ports[other][1])])
    for guest in guests.values():
        guest.start()
    ready = {name: wait_versions(guest, BOOT_DEADLINE) for name, guest in guests.items()}
    if not results.check("two units: both guests answer", all(ready.values()),
                         f"ready after {ready}; see {args.work_dir}"):
        return ready
    for name, guest in guests.items():
        results.check(f"two units: unit {name}'s console is at the appliance prompt",
                      guest.wait_console("appliance> ", 120), f"see {guest.console}")

    # At each console: the unit's card and the fingerprint its admin reads out.
    cards, fingerprints = {}, {}
    for name, guest in guests.items():
        cards[name] = card_of(console_command(guest, "peer export"))
        shown = console_command(guest, "peer fingerprint") or ""
        found = FINGERPRINT.search(shown)
        fingerprints[name] = found.group(0) if found else None
    if not results.check("two units: each console shows its card and fingerprint",
                         all(cards.values()) and all(fingerprints.values()),
                         f"cards {[bool(c) for c in cards.values()]} fingerprints {fingerprints}"):
        return ready

    # Each admin types in the other's card and confirms the fingerprint read out to them.
    for name, other in (("a", "b"), ("b", "a")):
        guest = guests[name]
        before = len(guest.console_text())
        guest.type(f"peer import - --expect-fingerprint {fingerprints[other]}\n")
        time.sleep(1)
        guest.type(json.dumps(cards[other], indent=1) + "\n\x04")
        deadline = time.monotonic() + 120
        imported = False
        while time.monotonic() < deadline and not imported:
            imported = "reloaded its allow-list: 1 peer" in guest.console_text()[before:]
            time.sleep(1)
        results.check(f"two units: unit {name} imports unit {other}'s card at its console",
                      imported, guest.console_text()[before:][-1500:])

    # A room on A, joined from B; messages both ways.
    tokens = {}
    for name, guest in guests.items():
        status, reply = login(guest.port, "admin", PASSWORD)
        tokens[name] = reply.get("access_token") if status == 200 else None
    if not results.check("two units: both admins log in", all(tokens.values()), str(tokens)):
        return ready
    a, b = ports["a"][0], ports["b"][0]
    status, reply = http(a, "POST", "/_matrix/client/v3/createRoom",
                         {"name": "across the link", "invite": ["@admin:unit-b.test"]},
                         tokens["a"], timeout=60)
    room = reply.get("room_id") if status == 200 else None
    if not results.check("two units: A creates a room and invites B's admin", room is not None,
                         f"{status} {reply}; A's peer list: "
                         f"{console_command(guests['a'], 'peer list')}"):
        return ready
    joined = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and joined is None:
        status, reply = http(b, "POST", f"/_matrix/client/v3/join/{room}?server_name=unit-a.test",
                             {}, tokens["b"], timeout=60)
        joined = reply.get("room_id") if status == 200 else None
        if joined is None:
            time.sleep(3)
    results.check("two units: B's admin joins the room over federation", joined == room,
                  f"{status} {reply}")

    def wait_body(port, token, body):
        end = time.monotonic() + 180
        while time.monotonic() < end:
            status, reply = http(port, "GET",
                                 f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50",
                                 token=token, timeout=30)
            if status == 200 and any(e.get("content", {}).get("body") == body
                                     for e in reply.get("chunk", [])):
                return True
            time.sleep(2)
        return False

    for sender, receiver, body in (("a", "b", "hello from unit A"), ("b", "a", "hello from unit B")):
        port = ports[sender][0]
        status, reply = http(port, "PUT",
                             f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{sender}1",
                             {"msgtype": "m.text", "body": body}, tokens[sender], timeout=60)
        results.check(f"two units: {body!r} reaches unit {receiver}",
                      status == 200 and wait_body(ports[receiver][0], tokens[receiver], body),
                      f"{status} {reply}")
    for guest in guests.values():
        guest.kill()
    return ready


REPO_IMAGE_DIR = REPO / "target/image"


def main():
    global REPO_IMAGE_DIR
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-dir", type=pathlib.Path, default=REPO / "target/image")
    ap.add_argument("--homeserver", type=pathlib.Path, default=REPO / "target/release/homeserver")
    ap.add_argument("--work-dir", type=pathlib.Path, default=REPO / "target/image-test")
    ap.add_argument("--appliance", type=pathlib.Path,
                    help="put this appliance binary in the image and provision through it")
    ap.add_argument("--rebuild", action="store_true", help="build even if the inputs are unchanged")
    ap.add_argument("--no-tamper", action="store_true", help="skip the tampered-root boot")
    ap.add_argument("--no-two-units", action="store_true", help="skip the two-unit federation")
    ap.add_argument("--two-units-only", action="store_true",
                    help="only the two-unit federation (with --appliance; for working on it)")
    ap.add_argument("--no-reproducibility", action="store_true",
                    help="skip the second checkout's build (image/check-reproducible.sh)")
    args = ap.parse_args()
    REPO_IMAGE_DIR = args.image_dir

    # SIGTERM/SIGINT end the test through normal exit, so the qemu processes get killed.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(f"boot-test: stopped by signal {s}"))

    t0 = time.monotonic()
    ensure_host_packages()
    results = Results()
    disk, build_s = build_or_reuse(args)
    sums = dict(line.split()[::-1] for line in (args.image_dir / "SHA256SUMS").read_text().splitlines())
    problems = layout.check(layout.load(), disk)
    results.check("disk GPT matches files/wic/outpost.wks.in", not problems, "; ".join(problems))

    repro_s = None
    repro_figures = []
    if not args.no_reproducibility:
        log("second checkout: release binaries and image again, for reproducibility "
            "(image/check-reproducible.sh)")
        start = time.monotonic()
        repro = subprocess.run(["nice", "bash", str(REPO / "image/check-reproducible.sh"),
                                "--reference", str(args.image_dir),
                                "--homeserver", str(args.homeserver),
                                *(["--appliance", str(args.appliance)] if args.appliance else [])],
                               timeout=3600, capture_output=True, text=True)
        repro_s = time.monotonic() - start
        repro_figures = [line.strip() for line in repro.stdout.splitlines()
                         if "(stripped)" in line or "release build" in line]
        for line in repro_figures:
            log(line)
        results.check("reproducible: a second checkout (other path, target dir and CARGO_HOME) "
                      "builds the same binaries, disk and partitions", repro.returncode == 0,
                      (repro.stdout[-1000:] + repro.stderr[-2000:]).strip())

    subprocess.run(["rm", "-rf", str(args.work_dir)], check=True)
    args.work_dir.mkdir(parents=True)
    unit = args.work_dir / "unit-a"
    if args.appliance:
        files = {"provisioning.json": PROVISIONING_JSON, "admin-password": PASSWORD.encode() + b"\n"}
        user = "admin"
    else:
        files = {"homeserver.toml": PROVISION_CONFIG}
        user = "alice"
    provision = qemu.make_provision_disk(args.work_dir / "provision.img", files)

    if args.two_units_only:
        log("two units only")
        two_units(args, disk, results)
        print(f"{results.passed} passed, {results.failed} failed")
        return 1 if results.failed else 0

    # --- first boot, provisioned from the PROVISION disk -------------------------------------
    log("boot 1 (PROVISION disk attached)")
    # With the appliance, the console is a socket the test types `tls client ca` into.
    guest = qemu.Guest(disk, unit, provision=provision, interactive=bool(args.appliance),
                       ca_port=qemu.free_port() if args.appliance else None).start()
    ready_1 = wait_versions(guest, BOOT_DEADLINE)
    results.check("boot 1: /_matrix/client/versions answers through 127.0.0.1 forward",
                  ready_1 is not None, f"no answer within {BOOT_DEADLINE} s; see {guest.console}")
    report_1 = guest.read_report(120) if ready_1 else guest.read_report(5)
    report_checks(results, report_1, 1)
    prompt = "appliance> " if args.appliance else "the appliance tool is not installed"
    results.check("boot 1: the serial console logs in by itself, into the appliance shell",
                  guest.wait_console(prompt, 60)
                  and "login: root (automatic login)" in guest.console_text())
    if ready_1:
        status, reply = http(guest.port, "GET", "/_matrix/client/versions",
                             context=ssl.create_default_context())
        results.check("boot 1: a client that does not trust the unit CA is refused",
                      status is None and "CERTIFICATE_VERIFY_FAILED" in str(reply),
                      f"{status} {reply}")
    unit_ca = guest_ca(guest, 5)
    if ready_1 and args.appliance:
        shown = (console_command(guest, "tls client ca") or "").replace("\r", "")
        pem = shown[shown.find("-----BEGIN"):shown.find("-----END CERTIFICATE-----") + 25]
        results.check("boot 1: `appliance tls client ca` shows the unit CA and its fingerprint",
                      unit_ca is not None and pem.strip() == unit_ca.strip()
                      and re.search(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", shown) is not None,
                      shown[-1500:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{guest.ca_port}/ca.crt",
                                        timeout=10) as resp:
                served = resp.read().decode()
        except (OSError, ValueError) as err:
            served = str(err)
        results.check("boot 1: port 80 serves the unit CA at /ca.crt, through the firewall",
                      unit_ca is not None and served.strip() == unit_ca.strip(), served[:300])

    room_id = event_id = None
    if ready_1:
        if args.appliance:
            status, reply = login(guest.port, user, PASSWORD)
            results.check("boot 1: the admin from the PROVISION disk logs in",
                          status == 200 and "access_token" in reply, f"{status} {reply}")
        else:
            status, reply = register(guest.port, user, PASSWORD)
            results.check("boot 1: register a user", status == 200 and "access_token" in reply,
                          f"{status} {reply}")
        token = reply.get("access_token") if status == 200 else None
        if token:
            status, reply = http(guest.port, "POST", "/_matrix/client/v3/createRoom",
                                 {"name": "persistence"}, token, timeout=60)
            room_id = reply.get("room_id") if status == 200 else None
            if room_id:
                status, reply = http(guest.port, "PUT",
                                     f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                                     {"msgtype": "m.text", "body": "kept across reboots"}, token,
                                     timeout=60)
                event_id = reply.get("event_id") if status == 200 else None
            results.check("boot 1: create a room and send a message", bool(room_id and event_id),
                          f"{status} {reply}")

    log("ACPI power button")
    off = guest.powerdown(POWERDOWN_DEADLINE)
    results.check("boot 1: clean shutdown on the ACPI power button",
                  off and "reboot: Power down" in guest.console_text(),
                  f"still running after {POWERDOWN_DEADLINE} s" if not off else "no 'Power down'")
    stopped_cleanly = "Stopped homeserver.service" in guest.console_text() or \
        "Stopped Outpost Matrix homeserver" in guest.console_text()
    results.check("boot 1: homeserver stopped cleanly", stopped_cleanly)
    guest.kill()

    # --- second boot: same disk, no PROVISION disk ---------------------------------------
    log("boot 2 (same disk, no PROVISION disk)")
    guest = qemu.Guest(disk, unit).start()
    ready_2 = wait_versions(guest, BOOT_DEADLINE)
    results.check("boot 2: homeserver answers again", ready_2 is not None,
                  f"see {guest.console}")
    if ready_2:
        status, reply = login(guest.port, user, PASSWORD)
        token = reply.get("access_token") if status == 200 else None
        results.check("boot 2: the user from boot 1 logs in (data persisted on /data)",
                      token is not None, f"{status} {reply}")
        if token and room_id and event_id:
            status, reply = http(guest.port, "GET",
                                 f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}", token=token)
            results.check("boot 2: the message from boot 1 is still there",
                          status == 200 and reply.get("content", {}).get("body") == "kept across reboots",
                          f"{status} {reply}")
    report_2 = guest.read_report(120) if ready_2 else guest.read_report(5)
    report_checks(results, report_2, 2)
    if report_1 and report_2:
        results.check("boot 2 is a different boot of the same unit",
                      report_1.get("begin") != report_2.get("begin"))
    guest.kill()

    # --- tampered root: one flipped byte in slot A ---------------------------------------
    tamper_s = None
    if not args.no_tamper:
        log("boot 3 (one byte of root slot A flipped)")
        tampered = args.work_dir / "tampered"
        guest = qemu.Guest(disk, tampered)
        offset = layout.part(layout.load(), "root-a")["start"] + 1024 * 1024 + 123
        with open(disk, "rb") as f:
            f.seek(offset)
            byte = f.read(1)[0]
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -P {byte ^ 0xFF} {offset} 1", str(guest.overlay)],
                       check=True, stdout=subprocess.DEVNULL)
        guest.start()
        refused = guest.wait_console("dm-verity verification failed", TAMPER_DEADLINE)
        tamper_s = guest.elapsed()
        results.check("tampered root: the initramfs refuses slot A", refused,
                      f"no refusal within {TAMPER_DEADLINE} s; see {guest.console}")
        results.check("tampered root: systemd never started from it",
                      "Welcome to" not in guest.console_text())
        status, _ = http(guest.port, "GET", "/_matrix/client/versions", timeout=3)
        results.check("tampered root: no homeserver answers", status is None)
        guest.kill()

    two_ready = None
    if args.appliance and not args.no_two_units:
        log("two units (each provisioned from its own PROVISION disk), cards typed in at the consoles")
        two_ready = two_units(args, disk, results)

    total = time.monotonic() - t0
    print()
    print(f"image: {disk} ({disk.stat().st_size // (1024 * 1024)} MiB raw, "
          f"{int(subprocess.run(['du', '-k', str(disk)], capture_output=True, text=True).stdout.split()[0]) // 1024} MiB allocated)")
    print(f"image sha256: {sums.get('outpost-test.img')}")
    print(f"root hash: {(args.image_dir / 'roothash').read_text().strip()}")
    for line in repro_figures:
        print(f"reproducibility: {line}")
    fmt = lambda s: "n/a" if s is None else f"{s:.0f} s"  # noqa: E731
    print(f"build {fmt(build_s) if build_s else 'reused'}; reproducibility rebuild "
          f"{fmt(repro_s)}; power-on to answering homeserver: "
          f"boot 1 {fmt(ready_1)}, boot 2 {fmt(ready_2)}; tampered root refused after "
          f"{fmt(tamper_s)}; two units answering after "
          f"{', '.join(fmt(v) for v in (two_ready or {}).values()) or 'n/a'}; "
          f"whole test {fmt(total)}")
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
