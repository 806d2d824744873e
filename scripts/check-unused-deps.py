#!/usr/bin/env python3
"""Fails when a dependency in Cargo.toml is named nowhere in the code.

A cheap stand-in for `cargo machete` (no extra crate to build in CI):
a `[dependencies]` entry must be referred to as `name::` / `use name` /
`extern crate name` somewhere in src/, a `[dev-dependencies]` entry in
tests/, examples/, benches/ or src/ (unit tests). Entries that are present
only to set features of a crate that another dependency pulls in are listed
in ALLOWED with the reason.
"""
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Dependencies named nowhere on purpose, and why.
ALLOWED = {
    # Self dev-dependency: turns `local-engine` on for examples/tests/benches.
    "rstream": "self dev-dependency enabling local-engine",
}


def rust_sources(*dirs):
    for d in dirs:
        base = ROOT / d
        if base.exists():
            yield from base.rglob("*.rs")


def used(ident, text):
    pattern = rf"(?<![A-Za-z0-9_]){re.escape(ident)}(::|\s+as\b|;)|extern crate {re.escape(ident)}\b"
    return re.search(pattern, text) is not None


def main():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    tables = [("dependencies", ("src",)), ("dev-dependencies", ("tests", "examples", "benches", "src"))]
    for target in manifest.get("target", {}).values():
        if "dependencies" in target:
            tables.append((target["dependencies"], ("src",)))
    unused = []
    for table, dirs in tables:
        deps = manifest.get(table, {}) if isinstance(table, str) else table
        text = "\n".join(p.read_text(errors="replace") for p in rust_sources(*dirs))
        for name, spec in deps.items():
            crate = spec.get("package", name) if isinstance(spec, dict) else name
            ident = name.replace("-", "_")
            if name in ALLOWED or crate in ALLOWED:
                continue
            if not used(ident, text):
                unused.append(f"{name} ({table if isinstance(table, str) else 'target dependencies'})")
    if unused:
        print("dependencies named nowhere in the code:", ", ".join(unused))
        return 1
    print("no unused dependency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
