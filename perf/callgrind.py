#!/usr/bin/env python3
"""Instructions per call of chosen functions, from a callgrind output file.

Usage: callgrind.py CALLGRIND.OUT REGEX...
For each REGEX, the functions whose (demangled) name matches it are summed: calls into them and
their inclusive instruction count (Ir) as their callers saw it. Prints one markdown cell group
per REGEX: "calls | Ir per call". The first event of the file must be Ir (callgrind's default).
"""
import re
import sys
from collections import defaultdict


def parse(path):
    """-> (calls, inclusive Ir) per callee name, summed over every call site."""
    names = {}  # "(id)" -> name, for callgrind's name compression
    calls = defaultdict(int)
    incl = defaultdict(int)

    def name(spec):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", spec.strip())
        if not m:
            return spec.strip()
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec.strip())

    callee, pending = None, None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("fn=", "cfn=", "cfi=", "cfl=", "fl=", "fi=", "fe=", "ob=", "cob=")):
                key, _, val = line.rstrip("\n").partition("=")
                if key in ("fn", "cfn"):
                    n = name(val)
                    if key == "cfn":
                        callee = n
                continue
            if line.startswith("calls="):
                pending = int(line.split("=", 1)[1].split()[0])
                continue
            if pending is not None and line[:1] in "0123456789+-*":
                toks = line.split()
                ir = int(toks[1]) if len(toks) > 1 else 0
                calls[callee] += pending
                incl[callee] += ir
                pending = None
    return calls, incl


def main():
    path, patterns = sys.argv[1], sys.argv[2:]
    calls, incl = parse(path)
    cells = []
    for p in patterns:
        rx = re.compile(p)
        hits = [n for n in calls if n and rx.search(n)]
        c = sum(calls[n] for n in hits)
        i = sum(incl[n] for n in hits)
        print(f"{p}: {', '.join(hits) or 'no match'}", file=sys.stderr)
        cells.append(f"{c:,}" if c else "n/a")
        cells.append(f"{i / c:,.0f}" if c else "n/a")
    print(" | ".join(cells))


if __name__ == "__main__":
    main()
