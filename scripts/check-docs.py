#!/usr/bin/env python3
"""The docs rule, checked in CI:

- no path outside the repository (`/work/…`, `../shared/…`) in docs, code
  or scripts;
- every section reference `NAME.md §N` (also `§N/§M`, `§N and §M`) names a
  numbered section of `docs/spec/NAME.md` (the wire facts code comments
  cite); a bare `§N` in a Markdown file needs a `NAME.md` before it;
- every relative Markdown link in README.md and docs/ points to a file
  that exists.

Usage: scripts/check-docs.py   (exit 1 with the offending lines)
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"(/work/|\.\./shared/)")
REFERENCE = re.compile(r"([A-Z_]+\.md) (§\d+(?:(?:/| and | or |, )§\d+)*)")
BARE = re.compile(r"(?<![A-Z_]\.md )§\d+")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TEXT = (".rs", ".md", ".sh", ".py", ".toml", ".yaml")


def tracked():
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [ROOT / line for line in out.splitlines() if line.endswith(TEXT)]


def sections(name, cache={}):
    if name not in cache:
        path = ROOT / "docs" / "spec" / name
        found = set()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                match = re.match(r"#{1,4} (\d+)\.", line)
                if match:
                    found.add(match.group(1))
        cache[name] = found if path.exists() else None
    return cache[name]


def main():
    problems = []
    for path in tracked():
        rel = path.relative_to(ROOT)
        if rel.as_posix() == "scripts/check-docs.py" or rel.parts[0] == "fuzz":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{rel}:{number}"
            if OUTSIDE.search(line):
                problems.append(f"{where}: path outside the repository: {line.strip()}")
            for name, refs in REFERENCE.findall(line):
                known = sections(name)
                if known is None:
                    problems.append(f"{where}: {name} is not in docs/spec/")
                    continue
                for n in re.findall(r"§(\d+)", refs):
                    if n not in known:
                        problems.append(f"{where}: docs/spec/{name} has no section {n}")
            if rel.suffix == ".md" and rel.parts[:2] != ("docs", "spec"):
                for bare in BARE.findall(line):
                    problems.append(f"{where}: {bare} without the document it refers to")
            if rel.suffix == ".md":
                # Inline code is not a link.
                for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                    if "://" in target or target.startswith("mailto:"):
                        continue
                    if not (path.parent / target).exists():
                        problems.append(f"{where}: broken link {target}")
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("docs rule holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
