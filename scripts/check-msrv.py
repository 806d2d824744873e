#!/usr/bin/env python3
"""The MSRV rule: Cargo.toml's `rust-version` is at least the highest
`rust-version` any locked dependency declares (normal, build and dev
dependencies, every feature, every platform). Only the installed toolchain
can run here, so this checks the declared numbers; it cannot prove that
an older compiler builds the crate.

Usage: scripts/check-msrv.py   (exit 1 and the offenders when violated)
"""
import json
import subprocess
import sys


def version(text):
    """`1.89` and `1.89.0` compare equal."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    meta = json.loads(out)
    packages = {p["id"]: p for p in meta["packages"]}
    root = packages[meta["resolve"]["root"]]
    declared = root.get("rust_version")
    if not declared:
        print("Cargo.toml declares no rust-version")
        return 1
    needed = []
    for node in meta["resolve"]["nodes"]:
        package = packages[node["id"]]
        if package["id"] == root["id"] or not package.get("rust_version"):
            continue
        if version(package["rust_version"]) > version(declared):
            needed.append((package["rust_version"], package["name"], package["version"]))
    if needed:
        print(f"rust-version = {declared}, but locked dependencies need more:")
        for rust, name, ver in sorted(needed, reverse=True):
            print(f"  {name} {ver} needs {rust}")
        return 1
    highest = max(
        (packages[n["id"]].get("rust_version") or "0" for n in meta["resolve"]["nodes"]
         if n["id"] != root["id"]),
        key=version,
    )
    print(f"MSRV rule holds: rust-version = {declared}, highest dependency needs {highest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
