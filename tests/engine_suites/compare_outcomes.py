"""Compare two pytest JUnit XML reports test by test: ``compare_outcomes.py BARE INSTRUMENTED``.

Prints each test whose outcome differs (passed, failed, error, skipped) and a summary line;
exits 1 if any differs or a test ran in only one of them.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree


def outcomes(path: str) -> dict[str, str]:
    """Test id -> outcome, from a JUnit XML file."""
    result = {}
    for case in ElementTree.parse(path).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
        result[test_id] = outcome
    return result


def main(bare_path: str, instrumented_path: str) -> int:
    bare, instrumented = outcomes(bare_path), outcomes(instrumented_path)
    differing = sorted(
        test_id
        for test_id in bare.keys() | instrumented.keys()
        if bare.get(test_id) != instrumented.get(test_id)
    )
    for test_id in differing:
        print(
            f"{test_id}: bare {bare.get(test_id, 'absent')}, "
            f"instrumented {instrumented.get(test_id, 'absent')}"
        )
    counts = {outcome: list(bare.values()).count(outcome) for outcome in sorted(set(bare.values()))}
    print(f"{len(bare)} tests bare {counts}; {len(differing)} with another outcome instrumented")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
