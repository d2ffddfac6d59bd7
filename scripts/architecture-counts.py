#!/usr/bin/env python3
"""The architecture's counts, as issue #38 states its targets: functions over 80 lines outside
tests, the store type's public methods, and the test binaries `cargo test` links.

    python3 scripts/architecture-counts.py            # the counts
    python3 scripts/architecture-counts.py --list     # and the long functions, longest first

A function's length is from its `fn` line to its closing brace. Test code is left out: files
named tests.rs, folders named tests, and `#[cfg(test)] mod ... { }` blocks. It reads the source as
text (strings, characters and comments are blanked before braces are matched), so it needs no
build.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 80


def blank(text):
    """`text` with comments, strings and character literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + len(hashes) + 2)
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, open_at):
    """The index of the brace closing the one at `open_at`."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code) - 1


def without_test_modules(code):
    """`code` with every `#[cfg(test)] mod x { ... }` blanked."""
    for m in list(re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", code)):
        start = m.end() - 1
        end = block_end(code, start)
        code = code[:start] + re.sub(r"[^\n]", " ", code[start : end + 1]) + code[end + 1 :]
    return code


def sources():
    for base in [ROOT / "src", *sorted((ROOT / "crates").glob("*/src"))]:
        for path in sorted(base.rglob("*.rs")):
            if path.name == "tests.rs" or "tests" in path.relative_to(base).parts[:-1]:
                continue
            yield path


def long_functions():
    found = []
    for path in sources():
        code = without_test_modules(blank(path.read_text()))
        for m in re.finditer(r"\bfn\s+(\w+)", code):
            brace, semi = code.find("{", m.end()), code.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a declaration without a body
            end = block_end(code, brace)
            lines = code.count("\n", m.start(), end) + 1
            if lines > LIMIT:
                line = code.count("\n", 0, m.start()) + 1
                found.append((lines, f"{path.relative_to(ROOT)}:{line}", m.group(1)))
    return sorted(found, reverse=True)


def store_public_methods():
    """`pub fn` / `pub async fn` directly inside `impl Store` blocks of the store."""
    count = 0
    store_dirs = [p for p in [ROOT / "src/store", ROOT / "crates/store/src"] if p.exists()]
    for base in store_dirs:
        for path in sorted(base.rglob("*.rs")):
            if path.name == "tests.rs":
                continue
            code = without_test_modules(blank(path.read_text()))
            for m in re.finditer(r"\bimpl\s+Store\s*\{", code):
                end = block_end(code, m.end() - 1)
                body = code[m.end() : end]
                count += len(re.findall(r"(?m)^    pub (async )?fn ", body))
    return count


def test_binaries():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    targets = [t for p in json.loads(out)["packages"] for t in p["targets"]]
    integration = sum(1 for t in targets if "test" in t["kind"])
    # Each lib and bin target also links a unit-test binary.
    unit = sum(1 for t in targets if set(t["kind"]) & {"lib", "bin"})
    return integration, unit


def main():
    longs = long_functions()
    integration, unit = test_binaries()
    print(f"functions over {LIMIT} lines outside tests: {len(longs)}")
    print(f"public methods of Store: {store_public_methods()}")
    print(f"integration test binaries: {integration} (and {unit} unit-test binaries, one per lib or bin)")
    if "--list" in sys.argv:
        for lines, where, name in longs:
            print(f"  {lines:4} {name} ({where})")


if __name__ == "__main__":
    main()
