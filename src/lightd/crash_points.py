"""Named moments at which the crash tests kill lightd, the way a power cut or the OOM killer would.

``LIGHTD_CRASH_AT=rebind.new_created`` (a comma-separated list) in a daemon's environment makes it
SIGKILL itself when it reaches that step, so a test can stop it between two writes on purpose
instead of hoping a signal lands there. Unset (always, outside tests) every point is a set lookup.
The names are listed in :data:`POINTS`; the environment is read once, at import.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["POINTS", "crash_point"]

log = logging.getLogger(__name__)

#: Every point the code passes, in the order a container's life passes them.
POINTS = frozenset(
    {
        "create.intent_saved",  # the container is saved as ``creating``; the engine has nothing
        "create.engine_done",  # the engine runs it; the database still says ``creating``
        "rebind.intent_saved",  # saved as ``rebinding`` with its new ports; engine unchanged
        "rebind.old_stopped",  # the old container stopped to free a port both share
        "rebind.new_created",  # the new container runs beside the old one
        "rebind.old_removed",  # only the new one is left, under its temporary name
        "rebind.renamed",  # the new one has the internal_id's name; the database is behind
        "delete.intent_saved",  # saved as ``deleting``; the engine still runs it
        "delete.engine_removed",  # the engine has nothing; the database still has the container
    }
)

_ARMED = frozenset(name.strip() for name in os.environ.get("LIGHTD_CRASH_AT", "").split(",") if name.strip())
if _ARMED - POINTS:
    # A misspelt point would make a crash test pass without crashing anything.
    raise SystemExit(f"lightd: LIGHTD_CRASH_AT names unknown points: {sorted(_ARMED - POINTS)}")


def crash_point(name: str) -> None:
    """Die here, at once and without cleaning up, if ``LIGHTD_CRASH_AT`` names this point."""
    if name in _ARMED:
        log.critical("crash point %s reached: killing this process (LIGHTD_CRASH_AT)", name)
        os.kill(os.getpid(), signal.SIGKILL)
