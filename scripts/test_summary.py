#!/usr/bin/env python3
"""Summarises cargo-nextest JUnit reports for scripts/test.sh.

Usage: test_summary.py LABEL=PATH [LABEL=PATH ...]

Prints the slowest suites (test binaries) by the summed time of their tests,
then one line of totals naming every failed test, prefixed by its run's
label. A report that is missing (its run never got as far as writing it)
counts as a failed run. Exits 0 when every test of every report passed.
"""

import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict

SLOWEST_SHOWN = 10


def main(arguments):
    suite_seconds = defaultdict(float)
    suite_tests = defaultdict(int)
    passed, failed, missing = 0, [], []
    for argument in arguments:
        label, _, path = argument.partition("=")
        try:
            root = ElementTree.parse(path).getroot()
        except (OSError, ElementTree.ParseError) as error:
            missing.append(f"{label} ({error})")
            continue
        for case in root.iter("testcase"):
            suite = f"{label}: {case.get('classname', '?')}"
            suite_seconds[suite] += float(case.get("time") or 0)
            suite_tests[suite] += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{label}: {case.get('classname', '?')} {case.get('name', '?')}")
            elif case.find("skipped") is None:
                passed += 1

    slowest = sorted(suite_seconds.items(), key=lambda item: item[1], reverse=True)[:SLOWEST_SHOWN]
    if slowest:
        print("==> slowest suites (seconds of test time, summed over their tests; two run at once)")
        print(f"    {'suite':<44} {'tests':>5} {'seconds':>8}")
        for suite, seconds in slowest:
            print(f"    {suite:<44} {suite_tests[suite]:>5} {seconds:>8.1f}")

    line = f"==> tests: {passed} passed, {len(failed)} failed"
    if missing:
        line += f", {len(missing)} run(s) wrote no report: {'; '.join(missing)}"
    if failed:
        line += f"; failed: {', '.join(failed)}"
    print(line)
    return 0 if not failed and not missing else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
