"""The job lifecycle: the only place that knows the SQL of jobs and their transitions.

Every transition is one conditional ``UPDATE … WHERE status = … RETURNING`` whose statement
also inserts its ``job_events`` rows, so a state change and its history commit together.
Split by who drives the transitions:

- :mod:`.core` — submit and read a job (api)
- :mod:`.dispatch` — lock due rows, mark them queued; backlog figures (scheduler)
- :mod:`.attempts` — claim, finish, renew leases, hand back (worker)
- :mod:`.admin` — cancel, retry, move to the DLQ, replay, batch submit (api)
- :mod:`.listing` — filtered listing with keyset cursors, job history (api)
- :mod:`.queues` — queue stats, pause/resume, concurrency caps (api, scheduler)
- :mod:`.schedules` — cron schedules (api, scheduler)
- :mod:`.rescue` — rescue of jobs whose worker or stream entry was lost; retention (reaper)
- :mod:`.maintenance` — VACUUM of jobs where the server's autovacuum is off (reaper)
"""

from taskforge.lifecycle import (
    admin,
    attempts,
    core,
    dispatch,
    listing,
    maintenance,
    queues,
    rescue,
    schedules,
)
from taskforge.lifecycle.admin import *  # noqa: F403
from taskforge.lifecycle.attempts import *  # noqa: F403
from taskforge.lifecycle.core import *  # noqa: F403
from taskforge.lifecycle.dispatch import *  # noqa: F403
from taskforge.lifecycle.listing import *  # noqa: F403
from taskforge.lifecycle.maintenance import *  # noqa: F403
from taskforge.lifecycle.queues import *  # noqa: F403
from taskforge.lifecycle.rescue import *  # noqa: F403
from taskforge.lifecycle.schedules import *  # noqa: F403

__all__ = [
    *core.__all__,
    *dispatch.__all__,
    *attempts.__all__,
    *admin.__all__,
    *listing.__all__,
    *queues.__all__,
    *rescue.__all__,
    *maintenance.__all__,
    *schedules.__all__,
]
