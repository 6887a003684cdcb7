"""Running one claimed job: its handler inside the job's span, its outcome to the finisher.

The :class:`~taskforge.worker.consumer.Worker` claims jobs and starts a task per job on
:meth:`JobRunner.run`; the :class:`~taskforge.worker.leases.LeaseKeeper` cancels a task whose
timeout, lease or job was cancelled, having set :attr:`Running.cancel_reason` first, and this
module turns that reason into the outcome to record (or none).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from taskforge import metrics, spans
from taskforge.config import Settings
from taskforge.jobs import Status
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.worker import outcomes
from taskforge.worker.finishing import Finisher, FinishItem
from taskforge.worker.registry import JobContext, JobLogger, Registry
from taskforge.worker.threads import HandlerThreads

log = logging.getLogger("taskforge.worker")

HANDLER_CANCELLED = (
    "CancelledError: the handler raised CancelledError without the worker cancelling it "
    "(it awaited a task or future that something else cancelled); catch it in the handler "
    "or raise an exception that says what went wrong"
)


@dataclass
class Running:
    """A claimed job this worker is running."""

    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    lease_deadline: float = 0.0
    timeout: float = 0.0  # the handler's, in seconds
    timeout_at: float = math.inf  # monotonic time the timeout sweep stops the handler
    cancel_reason: str | None = None  # cancel, shutdown, lease or timeout
    headers: dict[str, str] | None = None  # the stream entry's (trace context)
    stopping: threading.Event | None = None  # a sync handler's (see JobContext.stopping)


class JobRunner:
    """Runs handlers for one worker; ``on_done(job_id)`` is called when a job's task ends."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        finisher: Finisher,
        worker_name: str,
        on_done: Callable[[uuid.UUID], None],
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.finisher = finisher
        self.worker_name = worker_name
        self.on_done = on_done
        # A thread for every job that can run at once: sync jobs never queue for one.
        self.threads = HandlerThreads(settings.worker_concurrency)

    async def run(self, running: Running) -> None:
        """Run the job's handler and hand its outcome to the finisher (the task's body)."""
        job = running.job
        extra = {
            "job_id": str(job.id),
            "queue": job.queue,
            "type": job.type,
            "attempt": job.attempt,
        }
        logger = JobLogger(log, extra)
        handler = self.registry.get(job.type)
        started = time.monotonic()
        outcome: Outcome | None
        # The handler runs inside the job's CONSUMER span, so spans it makes nest under it.
        with spans.process(job, running.headers, self.worker_name) as span:
            try:
                if handler is None:
                    outcome = outcomes.dead(
                        job, outcomes.NO_HANDLER.format(type=job.type, queue=job.queue)
                    )
                else:
                    if not handler.is_async:
                        running.stopping = threading.Event()
                    ctx = JobContext(
                        job.id,
                        job.type,
                        job.queue,
                        job.attempt,
                        job.max_attempts,
                        job.stream_id,
                        logger,
                        running.stopping,
                    )
                    running.timeout = handler.timeout or job.timeout_seconds
                    # No timer per job: LeaseKeeper.enforce_timeouts cancels the task.
                    running.timeout_at = started + running.timeout
                    outcome = await outcomes.call(
                        handler,
                        ctx,
                        job,
                        self.settings.backoff_base,
                        self.settings.backoff_max,
                        self.threads,
                        lambda: self._thread_started(running),
                    )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if running.cancel_reason is None and task is not None and not task.cancelling():
                    # Nobody cancelled this job: the handler let out a CancelledError of its
                    # own (it awaited a future or task something else cancelled). That is a
                    # failure like any other; recorded as nothing, the job would wait out its
                    # lease and run again without a word why.
                    spans.record_error(RuntimeError(HANDLER_CANCELLED))
                    outcome = outcomes.failed(
                        job,
                        HANDLER_CANCELLED,
                        self.settings.backoff_base,
                        self.settings.backoff_max,
                    )
                else:
                    outcome = self._on_cancel(running)
            spans.processed(span, outcome, running.cancel_reason)
        runtime = time.monotonic() - started
        if outcome is None:
            metrics.job_series(job.queue, job.type).runtime.observe(runtime)
        else:
            # Outcome and runtime are counted when the finisher has recorded the batch.
            self.finisher.add(
                FinishItem(
                    outcome, job.queue, job.stream_id, job, spans.log_ids(span), runtime=runtime
                )
            )
        self.on_done(job.id)

    def _thread_started(self, running: Running) -> None:
        """A sync handler's thread took it: its timeout counts from now."""
        if running.cancel_reason is None:
            running.timeout_at = time.monotonic() + running.timeout

    def close(self) -> None:
        """Start no more handler threads (at the worker's exit)."""
        self.threads.close()

    def _on_cancel(self, running: Running) -> Outcome | None:
        """The outcome of a handler cancelled for ``running.cancel_reason``, if any."""
        job = running.job
        if running.cancel_reason == "timeout":
            message = f"timed out after {running.timeout:g}s"
            spans.record_error(TimeoutError(message))
            return outcomes.failed(
                job, message, self.settings.backoff_base, self.settings.backoff_max
            )
        if running.cancel_reason == "cancel":
            return Outcome(job.id, job.attempt, Status.CANCELLED, error="cancelled on request")
        if running.cancel_reason == "shutdown":
            self.finisher.handbacks.append((job.id, job.attempt, job.queue, job.stream_id))
        # "lease": another owner decides now; we record nothing.
        return None
