"""Replaces (or appends) one `## ` section of a Markdown file with the text on standard input,
whose first line is that section's heading: each benchmark script keeps its own section of
bench/results.md and leaves the others as they are.

    python3 bench/section.py bench/results.md < section.md
"""
import os
import sys

path = sys.argv[1]
section = sys.stdin.read().rstrip("\n") + "\n"
head = section.split("\n", 1)[0]
text = open(path).read() if os.path.exists(path) else "# pooltag benchmark\n"
if head in text:
    before, _, rest = text.partition(head)
    after = rest[rest.find("\n## "):] if "\n## " in rest else ""
    text = before + section + after
else:
    text = text.rstrip("\n") + "\n\n" + section
with open(path, "w") as out:
    out.write(text)
