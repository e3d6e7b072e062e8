#!/usr/bin/env python3
"""Validates the shipped examples against their JSON schemas.

    provisioning/check-examples.py

For each format in provisioning/ (the provisioning file, the peer card, the backup manifest):
  - the schema itself is a valid JSON Schema (draft 2020-12);
  - the valid example passes it;
  - every invalid example fails it, except those listed in SEMANTIC below: mistakes a schema
    cannot express (colliding ports, a broken signature, a repeated path). Those must pass the
    schema, so the list stays honest, and the black-box tests check that the tool refuses them
    (tests/tests/blackbox/appliance.rs for provisioning files, tests/tests/blackbox/appliance_backup_crypt.rs for
    peer cards and backup manifests).

Needs the `jsonschema` package. Run with any Python that has it; otherwise the script re-runs
itself with target/lint-venv (the virtualenv tests/image/check-layer.sh makes; kas depends on
jsonschema), creating that virtualenv with jsonschema alone if it does not exist yet.

Prints one line per file and ends with "N passed, N failed"; exits 0 when nothing failed, 1
otherwise, 2 when jsonschema cannot be had.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / "target" / "lint-venv"
# The version kas 5.5 brings into target/lint-venv; used only when this script makes the venv.
JSONSCHEMA_VERSION = "4.26.0"

# (schema, valid example, folder of invalid examples, pattern of invalid examples in it)
FORMATS = [
    ("provisioning.schema.json", "provisioning.example.json", "invalid", "*.json"),
    ("peer-card.schema.json", "peer-card.example.json", "invalid/peer-card", "*.json"),
    (
        "backup-manifest.schema.json",
        "backup-manifest.example.json",
        "invalid/backup-manifest",
        "*.json",
    ),
]

# Invalid examples that are valid JSON-schema-wise; why, and what refuses them.
SEMANTIC = {
    "invalid/ports-collide.json": "client_listen and federation_listen are the same "
    "address; appliance setup refuses it",
    "invalid/plain-http-off-loopback.json": "plain HTTP on a wildcard address without "
    "insecure_plain_http; appliance setup refuses it (loopback is allowed)",
    "invalid/peer-card/endpoint-changed-after-signing.json": "the self-signature no longer "
    "verifies; appliance peer import refuses it",
    "invalid/backup-manifest/duplicate-path.json": "a path is listed twice; appliance "
    "restore refuses it",
}


def ensure_jsonschema():
    """Imports jsonschema, re-running this script under target/lint-venv if needed."""
    try:
        import jsonschema  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("OUTPOST_CHECK_EXAMPLES_REEXEC"):
        sys.exit(f"jsonschema is not installed in {VENV} either")
    if not python.exists():
        print(f"creating {VENV} with jsonschema {JSONSCHEMA_VERSION}", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        except (subprocess.CalledProcessError, OSError) as err:
            print(f"cannot create {VENV}: {err} (is python3-venv installed?)", file=sys.stderr)
            sys.exit(2)
    probe = subprocess.run([str(python), "-c", "import jsonschema"], capture_output=True)
    if probe.returncode != 0:
        try:
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "-q", f"jsonschema=={JSONSCHEMA_VERSION}"],
                check=True,
            )
        except (subprocess.CalledProcessError, OSError) as err:
            print(f"cannot install jsonschema into {VENV}: {err}", file=sys.stderr)
            sys.exit(2)
    env = dict(os.environ, OUTPOST_CHECK_EXAMPLES_REEXEC="1")
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def load(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def main():
    ensure_jsonschema()
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    passed = failed = 0
    seen_semantic = set()

    def report(ok, name, detail):
        nonlocal passed, failed
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        if ok:
            passed += 1
            print(f"ok      {name}: {detail}")
        else:
            failed += 1
            print(f"FAILED  {name}: {detail}")

    for schema_name, example_name, invalid_dir, pattern in FORMATS:
        try:
            schema = load(HERE / schema_name)
            Draft202012Validator.check_schema(schema)
        except (OSError, ValueError, SchemaError) as err:
            report(False, schema_name, f"not a usable JSON schema: {err}")
            continue
        report(True, schema_name, "a valid draft 2020-12 schema")
        validator = Draft202012Validator(schema)

        errors = [e.message for e in validator.iter_errors(load(HERE / example_name))]
        report(not errors, example_name, "; ".join(errors) or f"passes {schema_name}")

        invalid = sorted((HERE / invalid_dir).glob(pattern))
        if not invalid:
            report(False, invalid_dir, "no invalid examples")
        for path in invalid:
            name = str(path.relative_to(HERE))
            try:
                errors = [e.message for e in validator.iter_errors(load(path))]
            except ValueError as err:
                errors = [f"not JSON: {err}"]
            if name in SEMANTIC:
                seen_semantic.add(name)
                report(
                    not errors,
                    name,
                    f"passes the schema as expected (semantic: {SEMANTIC[name]})"
                    if not errors
                    else "listed as semantic but fails the schema: " + "; ".join(errors),
                )
            else:
                report(
                    bool(errors),
                    name,
                    f"refused by {schema_name}: {errors[0]}"
                    if errors
                    else f"passes {schema_name} but should not (or list it in SEMANTIC)",
                )

    for name in sorted(set(SEMANTIC) - seen_semantic):
        report(False, name, "listed in SEMANTIC but not found")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
