#!/usr/bin/env python3
"""Regenerates the captured outputs in the docs.

A captured output is a fenced block right after a marker line naming the hookrace command that
printed it:

    <!-- captured: hookrace demo --seed 3 -->
    ```text
    ...
    ```

This script runs each command once (the debug binary, built first) and writes its stdout into
every block marked with it. `cargo test` (tests/suite/docs.rs) runs the same commands and fails
when a block no longer matches what the command prints, up to what varies from run to run: the
ports the demo binds, and (past its banner) the figures a real-time race measures, which are
compared by place, since the machine's clock decides them.

    scripts/capture-docs.py            # regenerate every captured block
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- captured: (hookrace [^>]*?) -->\n```text\n.*?^```$", re.S | re.M)


def docs():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main():
    subprocess.run(["cargo", "build", "-q", "--bin", "hookrace"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "debug" / "hookrace"
    outputs = {}
    for path in docs():
        text = path.read_text()
        for command in MARKER.findall(text):
            if command not in outputs:
                print(f"running {command}", file=sys.stderr)
                args = command.split()[1:]
                run = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"{command} failed ({run.returncode}):\n{run.stderr}")
                outputs[command] = run.stdout
        def block(m):
            return f"<!-- captured: {m.group(1)} -->\n```text\n{outputs[m.group(1)].rstrip()}\n```"
        new = MARKER.sub(block, text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
