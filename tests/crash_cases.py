"""The crash points the crash tests kill lightd at, shared by the unit and the end-to-end test.

Each case: (point, operation, whether the rebind keeps the tcp port, which ports it must end
on: ``"old"``, ``"new"``, or None when nothing is left). tests/unit/test_container_recovery.py
checks that the cases name every point of lightd.crash_points.
"""

CASES = [
    ("create.intent_saved", "create", False, None),
    ("create.engine_done", "create", False, None),
    ("rebind.intent_saved", "rebind", False, "old"),
    ("rebind.old_stopped", "rebind", True, "old"),
    ("rebind.new_created", "rebind", False, "old"),
    ("rebind.new_created", "rebind", True, "old"),
    ("rebind.old_removed", "rebind", False, "new"),
    ("rebind.old_removed", "rebind", True, "new"),
    ("rebind.renamed", "rebind", False, "new"),
    ("delete.intent_saved", "delete", False, None),
    ("delete.engine_removed", "delete", False, None),
]
