#!/usr/bin/env python3
"""The Outpost partition layout, read from the one place it is written down: the wic kickstart
file of the Yocto layer (yocto-layer/meta-outpost/files/wic/outpost.wks.in).

The qemu test image lays out its disk from this, and the tests compare a built disk's GPT with
it, so the test image and the production image cannot drift apart.

    layout.py json            the layout as JSON (offsets in bytes)
    layout.py sfdisk          an sfdisk script that writes this GPT
    layout.py get NAME FIELD  one field of one partition (uuid, type, size, start, fsuuid, ...)
    layout.py check DISK      exit 1 unless DISK's GPT matches the layout exactly
"""

import argparse
import json
import pathlib
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
WKS = ROOT / "yocto-layer/meta-outpost/files/wic/outpost.wks.in"

MIB = 1024 * 1024
SECTOR = 512
# Room for the backup GPT (33 sectors) at the end of the disk, rounded up to the alignment.
TAIL = MIB

# Options of `part` lines that carry a value; anything else is rejected so that a new option in
# the wks file is noticed here rather than silently ignored.
PART_OPTIONS = {
    "--source", "--sourceparams", "--fstype", "--label", "--fsuuid", "--part-name",
    "--part-type", "--uuid", "--align", "--fixed-size", "--mkfs-extraopts",
}
PART_FLAGS = {"--active"}
BOOTLOADER_OPTIONS = {"--ptable", "--diskid", "--timeout", "--configfile"}


class LayoutError(Exception):
    pass


def _options(tokens, valued, flags, line_no):
    opts, positional = {}, []
    it = iter(tokens)
    for tok in it:
        if tok.startswith("--") and "=" in tok:
            tok, value = tok.split("=", 1)
            if tok not in valued:
                raise LayoutError(f"line {line_no}: option {tok} is not understood by layout.py")
            opts[tok] = value
        elif tok in flags:
            opts[tok] = True
        elif tok in valued:
            try:
                opts[tok] = next(it)
            except StopIteration:
                raise LayoutError(f"line {line_no}: {tok} needs a value") from None
        elif tok.startswith("--"):
            raise LayoutError(f"line {line_no}: option {tok} is not understood by layout.py")
        else:
            positional.append(tok)
    return opts, positional


def _mib(value, line_no):
    if not value.endswith("M") or not value[:-1].isdigit():
        raise LayoutError(f"line {line_no}: size {value!r} must be whole MiB, like 64M")
    return int(value[:-1]) * MIB


def parse(text):
    """Parse the wks text into {"disk_id", "configfile", "parts": [...], "size"}."""
    disk = {"disk_id": None, "configfile": None, "parts": []}
    offset = 0
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = shlex.split(line)
        keyword, rest = tokens[0], tokens[1:]
        if keyword == "bootloader":
            opts, _ = _options(rest, BOOTLOADER_OPTIONS, set(), line_no)
            if opts.get("--ptable") != "gpt":
                raise LayoutError(f"line {line_no}: the layout must be GPT")
            disk["disk_id"] = opts.get("--diskid")
            disk["configfile"] = opts.get("--configfile")
        elif keyword == "part":
            opts, positional = _options(rest, PART_OPTIONS, PART_FLAGS, line_no)
            for required in ("--part-name", "--part-type", "--uuid", "--fixed-size"):
                if required not in opts:
                    raise LayoutError(f"line {line_no}: part needs {required}")
            align = int(opts.get("--align", "1024")) * 1024
            start = max(offset, MIB)
            start = (start + align - 1) // align * align
            size = _mib(opts["--fixed-size"], line_no)
            disk["parts"].append({
                "name": opts["--part-name"],
                "type": opts["--part-type"].upper(),
                "uuid": opts["--uuid"].lower(),
                "start": start,
                "size": size,
                "mountpoint": positional[0] if positional else None,
                "source": opts.get("--source"),
                "fstype": opts.get("--fstype"),
                "label": opts.get("--label"),
                "fsuuid": opts.get("--fsuuid"),
                "mkfs_extraopts": opts.get("--mkfs-extraopts"),
                "bootable": "--active" in opts,
            })
            offset = start + size
        else:
            raise LayoutError(f"line {line_no}: unknown directive {keyword!r}")
    if not disk["disk_id"] or not disk["parts"]:
        raise LayoutError("the layout needs a bootloader line with --diskid and at least one part")
    names = [p["name"] for p in disk["parts"]]
    if len(set(names)) != len(names):
        raise LayoutError("partition names must be unique")
    disk["size"] = offset + TAIL
    return disk


def load(path=WKS):
    return parse(pathlib.Path(path).read_text())


def part(disk, name):
    for p in disk["parts"]:
        if p["name"] == name:
            return p
    raise LayoutError(f"no partition named {name!r}")


def sfdisk_script(disk):
    lines = [
        "label: gpt",
        f"label-id: {disk['disk_id'].upper()}",
        "unit: sectors",
        "first-lba: 2048",
        f"last-lba: {disk['size'] // SECTOR - 34}",
        "",
    ]
    for p in disk["parts"]:
        attrs = ', attrs="LegacyBIOSBootable"' if p["bootable"] else ""
        lines.append(
            f"start={p['start'] // SECTOR}, size={p['size'] // SECTOR}, type={p['type']}, "
            f"uuid={p['uuid'].upper()}, name=\"{p['name']}\"{attrs}"
        )
    return "\n".join(lines) + "\n"


def check(disk, image):
    """Compare the GPT of `image` with the layout; return a list of differences."""
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table = json.loads(out)["partitiontable"]
    problems = []
    if table.get("label") != "gpt":
        problems.append(f"label is {table.get('label')}, expected gpt")
    if table.get("id", "").upper() != disk["disk_id"].upper():
        problems.append(f"disk id {table.get('id')} != {disk['disk_id']}")
    got = table.get("partitions", [])
    if len(got) != len(disk["parts"]):
        problems.append(f"{len(got)} partitions, expected {len(disk['parts'])}")
    for want, have in zip(disk["parts"], got):
        for field, expected, actual in (
            ("name", want["name"], have.get("name")),
            ("type", want["type"], have.get("type", "").upper()),
            ("uuid", want["uuid"], have.get("uuid", "").lower()),
            ("start", want["start"] // SECTOR, have.get("start")),
            ("size", want["size"] // SECTOR, have.get("size")),
        ):
            if expected != actual:
                problems.append(f"{want['name']}: {field} is {actual}, expected {expected}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wks", default=str(WKS), help="kickstart file (default: the layer's)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("json")
    sub.add_parser("sfdisk")
    get = sub.add_parser("get")
    get.add_argument("name")
    get.add_argument("field")
    chk = sub.add_parser("check")
    chk.add_argument("disk")
    args = ap.parse_args()

    try:
        disk = load(args.wks)
        if args.cmd == "json":
            print(json.dumps(disk, indent=2))
        elif args.cmd == "sfdisk":
            sys.stdout.write(sfdisk_script(disk))
        elif args.cmd == "get":
            if args.name == "disk":
                print(disk[args.field])
            else:
                print(part(disk, args.name)[args.field])
        elif args.cmd == "check":
            problems = check(disk, args.disk)
            for problem in problems:
                print(f"layout mismatch: {problem}", file=sys.stderr)
            return 1 if problems else 0
    except LayoutError as err:
        print(f"layout.py: {args.wks}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
