#!/usr/bin/env python3
"""Enforces the include rules of ci/layers.json on the project's sources.

Usage:
  check_layers.py SOURCE_DIR              check the tree; exit 1 on violations
  check_layers.py SOURCE_DIR --self-test  plant one violation of every rule
                                          in memory and require that each is
                                          reported (naming file and rule)

Every violation is one line: `FILE:LINE: includes "X": RULE`.
"""
import json
import os
import re
import sys

SOURCE_EXT = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh", ".in")
TEST_DIRS = ("tests", "bench", "fuzz")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def is_test_code(path):
    return any(part in TEST_DIRS for part in path.split("/")[:-1])


def layer_of(path, layers):
    best = None
    for layer in layers:
        d = layer["dir"].rstrip("/") + "/"
        if path.startswith(d) and (best is None or len(d) > len(best["dir"].rstrip("/")) + 1):
            best = layer
    return best


def sources(root):
    for top in ("common", "harness", "reference", "kernels", "reports", "fuzz"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if f.endswith(SOURCE_EXT):
                    full = os.path.join(dirpath, f)
                    yield os.path.relpath(full, root).replace(os.sep, "/")


def includes_of(root, path, planted):
    out = []
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            m = INCLUDE_RE.match(line)
            if m:
                out.append((n, m.group(1)))
    for extra in planted.get(path, []):
        out.append((0, extra))
    return out


def check(root, spec, planted=None):
    planted = planted or {}
    layers = spec["layers"]
    by_name = {l["name"]: l for l in layers}
    for l in layers:
        for u in l["uses"]:
            if u not in by_name:
                raise SystemExit(f"ci/layers.json: layer {l['name']} uses unknown layer {u}")
    violations = []
    for path in sorted(sources(root)):
        src_test = is_test_code(path)
        src_layer = layer_of(path, layers)
        for line, inc in includes_of(root, path, planted):
            if "/" not in inc:
                continue  # a sibling header of the same folder
            where = f"{path}:{line}: includes \"{inc}\""
            if is_test_code(inc) and not src_test:
                violations.append(f"{where}: only test code may include test code")
                continue
            if src_test:
                continue
            for rule in spec["rules"]:
                if path.startswith(rule["from"]) and any(inc.startswith(t) for t in rule["to"]) \
                        and inc not in rule.get("except", []):
                    violations.append(f"{where}: rule: {rule['name']}")
            inc_layer = layer_of(inc, layers)
            if src_layer is None or inc_layer is None:
                continue  # not a layered file (generated, third party)
            if inc_layer is not src_layer and inc_layer["name"] not in src_layer["uses"]:
                violations.append(f"{where}: rule: layer {src_layer['name']} ({src_layer['dir']}/) may not "
                                  f"include layer {inc_layer['name']} ({inc_layer['dir']}/); it uses "
                                  f"{', '.join(src_layer['uses']) or 'nothing'}")
    return violations


# One planted include per rule, and the text its report must contain.
PLANTS = [
    ("reference/parallel/dist_model.cpp", "harness/checks/check.h", "never includes its judge"),
    ("reference/parallel/dist_model.cpp", "harness/launch/rank_env.h", "never includes its judge"),
    ("reference/plan/plan.cpp", "harness/mutate/mutant.h", "only through the declared mutation-point header"),
    ("reference/parallel/loading.cpp", "reference/mutants/other.h", "only through the declared mutation-point header"),
    ("kernels/routing.cpp", "reference/model/config.h", "kernels include nothing above common"),
    ("reports/report.cpp", "harness/comm/types.h", "reports include nothing above common"),
    ("reference/model/init.cpp", "reference/plan/plan.h", "layer model (reference/model/) may not include layer plan"),
    ("harness/checks/check_common.cpp", "harness/suite/runner.h", "layer checks (harness/checks/) may not include layer suite"),
    ("harness/suite/runner.cpp", "harness/suite/tests/x.h", "only test code may include test code"),
    ("harness/suite/case_file.cpp", "fuzz/targets.h", "only test code may include test code"),
]


def self_test(root, spec):
    if check(root, spec):
        print("self-test: the tree itself has violations; fix those first", file=sys.stderr)
        return 1
    bad = 0
    for path, inc, expect in PLANTS:
        found = check(root, spec, {path: [inc]})
        ok = len(found) >= 1 and all(path in v and inc in v for v in found) and any(expect in v for v in found)
        print(("caught" if ok else "MISSED") + f": {path} including {inc}" + ("" if ok else f" -> {found}"))
        bad += not ok
    return 1 if bad else 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    with open(os.path.join(root, "ci", "layers.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    if "--self-test" in sys.argv[2:]:
        return self_test(root, spec)
    violations = check(root, spec)
    for v in violations:
        print(v)
    print(f"layering: {len(violations)} violation(s)" if violations else "layering: every include follows ci/layers.json")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
