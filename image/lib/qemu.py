#!/usr/bin/env python3
"""Run an Outpost disk image under qemu, software emulation only, with every wait bounded.

    qemu.py DISK [--provision DIR] [--port N] [--timeout S] [--workdir DIR]

boots DISK (never modified: the guest writes to a qcow2 overlay in the work directory) and
leaves it running until the timeout, printing where the serial logs are. Tests import `Guest`.

- Accelerator: TCG (`-accel tcg`); KVM is not available on our machines and is never tried.
- CPU: Nehalem, an x86-64-v2 CPU without AVX/AVX2: the image must run on the oldest CPU we ship on.
- Firmware: OVMF (UEFI), with a per-guest copy of the variable store. With `secure_boot_vars`
  (a variable store with PK, KEK and db enrolled and Secure Boot on, see update-test.py), the
  Secure Boot build of OVMF on a q35 with SMM, and a copy of that store.
- Serial: ttyS0 (the console) and ttyS1 (the test report) go to files in the work directory.
- Network: user-mode, `restrict=on` (the guest reaches nothing outside qemu), one host forward
  bound to 127.0.0.1 for the client port (and, for a unit that federates, one for its
  federation port). A guest reaches another guest only through a guest forward: its
  connections to a virtual address are handed to `socat`, which connects to the other guest's
  host forward on 127.0.0.1. The host only ever talks to 127.0.0.1.
- With `interactive=True` the console is also a Unix socket, so a test can type at it as an
  admin at the serial console would (`Guest.type`); its output is still logged to the file.
- Reboots are cold: qemu runs with `-no-reboot`, so a guest that reboots makes qemu exit, and a
  test that wants the next boot calls `Guest.power_cycle`, which starts a new qemu on the same
  overlay and the same firmware variables (what a unit's reset or the installer's power switch
  does). A warm reset under TCG was seen to hang OVMF's Secure Boot build (SMM): on the second
  reset in one qemu, no output after "BdsDxe: starting Boot0001", the vCPU looping in OVMF.
- Every guest is killed when its `Guest` is closed, on timeout, and at interpreter exit; and
  each qemu runs under coreutils `timeout` (`lifetime`, default 15 minutes), so even a runner
  that is itself killed cannot leave a guest behind.
"""

import argparse
import atexit
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# The same firmware built with Secure Boot and SMM (the variable store is then writable only
# from SMM, so the guest's OS cannot change the enrolled keys).
OVMF_CODE_SECBOOT = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
GUEST_CLIENT_PORT = 443
# The plain-HTTP listener serving the unit CA (listen.ca_http), when a test forwards it.
GUEST_CA_HTTP_PORT = 80
GUEST_FEDERATION_PORT = 8448

_live = set()


def _kill_all():
    for guest in list(_live):
        guest.kill()


atexit.register(_kill_all)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_provision_disk(path, files):
    """A small FAT image labelled PROVISION holding `files` ({name: bytes})."""
    path = pathlib.Path(path)
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-n", "PROVISION", "-C", str(path), "4096"], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            src = pathlib.Path(tmp, name)
            src.write_bytes(data)
            subprocess.run(["mcopy", "-i", str(path), str(src), f"::{name}"], check=True)
    return path


class Guest:
    """One qemu process. `workdir` keeps the overlay and the firmware variables, so a second
    Guest on the same workdir boots the same (persisted) disk again."""

    def __init__(self, disk, workdir, provision=None, port=None, memory_mb=1024, smp=2,
                 lifetime=900, fed_port=None, guest_forwards=(), interactive=False,
                 extra_disks=(), secure_boot_vars=None, ca_port=None):
        self.disk = pathlib.Path(disk).resolve()
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.provision = provision
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.smp = smp
        self.lifetime = lifetime
        # Host port forwarded to the guest's federation port (None: not forwarded).
        self.fed_port = fed_port
        # Host port forwarded to the guest's plain-HTTP CA download port (None: not forwarded).
        self.ca_port = ca_port
        # (guest address, guest port, host port on 127.0.0.1) for connections the guest opens.
        self.guest_forwards = list(guest_forwards)
        self.interactive = interactive
        # More read-only raw disks (a USB stick with update bundles, say).
        self.extra_disks = [pathlib.Path(d).resolve() for d in extra_disks]
        self.secure_boot = secure_boot_vars is not None
        self._console = None
        self._copier = None
        self.proc = None
        self.boot = 0
        self.overlay = self.workdir / "disk.qcow2"
        self.vars = self.workdir / "OVMF_VARS.fd"
        if not self.overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(self.disk), str(self.overlay)], check=True)
        if not self.vars.exists():
            shutil.copyfile(secure_boot_vars or OVMF_VARS, self.vars)

    @property
    def console(self):
        return self.workdir / f"console-{self.boot}.log"

    @property
    def report(self):
        return self.workdir / f"report-{self.boot}.log"

    @property
    def console_socket(self):
        return self.workdir / "console.sock"

    @property
    def qmp_path(self):
        return self.workdir / "qmp.sock"

    def command(self):
        cmd = [
            "timeout", "--kill-after=10", str(self.lifetime),
            "qemu-system-x86_64", "-machine", "q35,smm=on" if self.secure_boot else "q35",
            "-accel", "tcg", "-cpu", "Nehalem",
            "-smp", str(self.smp), "-m", str(self.memory_mb), "-nodefaults",
            "-display", "none", "-vga", "none",
            *(["-global", "driver=cfi.pflash01,property=secure,value=on"]
              if self.secure_boot else []),
            "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="
            + (OVMF_CODE_SECBOOT if self.secure_boot else OVMF_CODE),
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
            "-drive", f"if=none,id=disk0,format=qcow2,file={self.overlay}",
            "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
            "-netdev", self.netdev(),
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            # An interactive console waits for the test to connect (see `start`), which then
            # keeps reading it into the log file: a socket chardev with a log file of its own
            # was seen to log some bytes twice when no client was connected.
            "-chardev", f"socket,id=ttyS0,path={self.console_socket},server=on,wait=on"
            if self.interactive else f"file,id=ttyS0,path={self.console}",
            "-serial", "chardev:ttyS0",
            "-chardev", f"file,id=ttyS1,path={self.report}",
            "-serial", "chardev:ttyS1",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            # A reboot ends this qemu (see the module header: cold restarts only).
            "-no-reboot",
        ]
        for i, disk in enumerate(self.extra_disks):
            cmd += ["-drive", f"if=none,id=extra{i},format=raw,readonly=on,file={disk}",
                    "-device", f"virtio-blk-pci,drive=extra{i}"]
        if self.provision:
            cmd += ["-drive", f"if=none,id=prov,format=raw,readonly=on,file={self.provision}",
                    "-device", "virtio-blk-pci,drive=prov"]
        return cmd

    def netdev(self):
        """The user-mode network: restricted, with the host and guest forwards."""
        parts = ["user,id=net0,restrict=on",
                 f"hostfwd=tcp:127.0.0.1:{self.port}-:{GUEST_CLIENT_PORT}"]
        if self.fed_port:
            parts.append(f"hostfwd=tcp:127.0.0.1:{self.fed_port}-:{GUEST_FEDERATION_PORT}")
        if self.ca_port:
            parts.append(f"hostfwd=tcp:127.0.0.1:{self.ca_port}-:{GUEST_CA_HTTP_PORT}")
        for address, guest_port, host_port in self.guest_forwards:
            # One socat per connection the guest opens (no commas allowed in the command).
            log = self.workdir / "guestfwd.log"
            parts.append(f"guestfwd=tcp:{address}:{guest_port}-"
                         f"cmd:sh -c 'echo connection >> {log}; "
                         f"exec socat STDIO TCP:127.0.0.1:{host_port} 2>> {log}'")
        return ",".join(parts)

    def type(self, text):
        """Types `text` at the serial console (interactive guests only), a little at a time,
        as a person types: under emulation the guest drains its serial FIFO slowly."""
        assert self.interactive and self._console, "the console of this guest is not a socket"
        data = text.encode()
        for i in range(0, len(data), 8):
            self._console.sendall(data[i:i + 8])
            time.sleep(0.03)

    def _attach_console(self, timeout=30):
        """Connects to the console socket (qemu waits for it before starting the guest) and
        copies everything the guest writes there into the console log."""
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                sock.connect(str(self.console_socket))
                break
            except OSError:
                if time.monotonic() > deadline or not self.running():
                    sock.close()
                    raise
                time.sleep(0.1)
        self._console = sock
        log = open(self.console, "ab", buffering=0)

        def copy():
            with log:
                while True:
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        return
                    if not data:
                        return
                    log.write(data)

        self._copier = threading.Thread(target=copy, daemon=True)
        self._copier.start()

    def _drain_console(self):
        """After qemu exited: let the copy thread write the console's last bytes (it ends at
        the socket's end of file)."""
        if self._copier is not None:
            self._copier.join(timeout=10)

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "guest already running"
        self.boot += 1
        if self._console is not None:
            self._console.close()
            self._console = None
        self.qmp_path.unlink(missing_ok=True)
        self.console_socket.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=open(self.workdir / f"qemu-{self.boot}.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _live.add(self)
        if self.interactive:
            self._attach_console()
        return self

    def wait_exit(self, timeout):
        """Wait until qemu exits (the guest rebooted or powered off). True if it did."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self._drain_console()
        return True

    def rebooted(self):
        """Whether the boot that ended asked for a restart (the kernel's last words), as opposed
        to a power-off or a crash."""
        return not self.running() and "reboot: Restarting system" in self.console_text()

    def power_cycle(self):
        """Start the next boot after qemu has exited: a new qemu on the same overlay and firmware
        variables, its console and report in new files (console-N.log, report-N.log)."""
        self.kill()
        return self.start()

    def elapsed(self):
        return time.monotonic() - self.started

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def console_text(self):
        """The console log so far, without terminal escape sequences."""
        try:
            text = self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", "", text)

    def wait_console(self, needle, timeout):
        """Wait until `needle` appears on the console; False on timeout or qemu exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.console_text():
                return True
            if not self.running():
                return needle in self.console_text()
            time.sleep(0.5)
        return False

    def wait_console_after(self, offset, needle, timeout):
        """Like `wait_console`, in the console text after `offset` characters only."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.console_text()[offset:]:
                return True
            if not self.running():
                break
            time.sleep(0.5)
        return needle in self.console_text()[offset:]

    def read_report(self, timeout):
        """Wait for the test report on ttyS1 and return it as a dict (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = self.report.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            fields, started = {}, False
            for line in text.splitlines():
                key, _, value = line.partition("\t")
                if key == "begin":
                    fields, started = {"begin": value}, True
                elif started:
                    fields[key] = value
            if fields.get("end") == "ok":
                return fields
            if not self.running():
                return None
            time.sleep(1)
        return None

    def qmp(self, command, timeout=10):
        """Send one QMP command; returns its response."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            while True:
                try:
                    s.connect(str(self.qmp_path))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": command}):
                f.write(json.dumps(cmd) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def powerdown(self, timeout):
        """Press the ACPI power button and wait for the guest to power off. True if it did."""
        try:
            self.qmp("system_powerdown")
        except OSError:
            return False
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        """Stop qemu: SIGTERM to `timeout`, which passes it on and reaps qemu; SIGKILL to the
        whole process group if that has not worked within 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        if self.proc is not None:
            self._drain_console()
        if self._console is not None:
            self._console.close()
            self._console = None
        _live.discard(self)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("disk")
    ap.add_argument("--provision", help="directory whose files go on a PROVISION disk")
    ap.add_argument("--port", type=int, help="host port forwarded to the guest's client port")
    ap.add_argument("--timeout", type=float, default=600, help="kill the guest after S seconds")
    ap.add_argument("--workdir", help="overlay, firmware variables and logs (default: a temp dir)")
    args = ap.parse_args()

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="outpost-qemu-"))
    provision = None
    if args.provision:
        files = {p.name: p.read_bytes() for p in pathlib.Path(args.provision).iterdir() if p.is_file()}
        provision = make_provision_disk(workdir / "provision.img", files)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(f"qemu.py: stopped by signal {s}"))
    guest = Guest(args.disk, workdir, provision=provision, port=args.port,
                  lifetime=args.timeout + 30).start()
    print(f"console: {guest.console}\nreport: {guest.report}\n"
          f"client API: http://127.0.0.1:{guest.port}/_matrix/client/versions\n"
          f"killed after {args.timeout:.0f} s (Ctrl-C to stop sooner)")
    try:
        guest.proc.wait(timeout=args.timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    finally:
        guest.kill()


if __name__ == "__main__":
    sys.exit(main())
