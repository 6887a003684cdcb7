"""The job lifecycle: the only place that knows the SQL of jobs and their transitions.

Every transition is one conditional ``UPDATE … WHERE status = … RETURNING`` whose statement
also inserts its ``job_events`` rows, so a state change and its history commit together.
Split by who drives the transitions:

- :mod:`.core` — submit, dispatch, claim, finish, leases, hand-back (api, scheduler, worker)
"""

from taskforge.lifecycle.core import *  # noqa: F403
from taskforge.lifecycle.core import __all__ as _core_all

__all__ = list(_core_all)
