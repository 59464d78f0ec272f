"""Runs as database records: accepted, started, ended, each step a compare-and-set.

A run's record exists from the moment the run is accepted, before anything is
queued, and every change of status is an update guarded by the status it
expects. Whoever wins that update owns the next step, so a run ends once, with
exactly one log entry, whatever races between a worker finishing it, a worker
being declared lost, and a caller cancelling it.

Statuses: `queued` -> `running` -> `completed` | `failed` | `timed_out`, and
`cancelled` from either of the first two. A worker that takes a run holds a
lease until the run's limit plus `LEASE_MARGIN`; a run still `running` past its
lease belongs to a worker that died, and ends `failed` with `WorkerLost`.

A worker retries its steps while the database does not answer (`db.retrying`).
A retry after a commit whose acknowledgement was lost would find its own
compare-and-set already done, so each step also recognises its own earlier
write, and writes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from apptasks import db, outages
from apptasks.errors import BadInput, NotFound, check_known, check_page_limit
from apptasks.execution import RunError, RunOutcome
from apptasks.logs import record_run
from apptasks.models import Run, TaskLog
from apptasks.runs import RunOrder

logger = logging.getLogger("apptasks.records")

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, TIMED_OUT, CANCELLED)
ACTIVE = (QUEUED, RUNNING)

WORKER_LOST = "WorkerLost"
CANCELLED_ERROR = "Cancelled"
# Seconds past a run's own limit before its worker is taken as lost: room for
# killing a stuck browser and writing the outcome.
LEASE_MARGIN = 5.0
DEFAULT_LIMIT = 20
MAX_LIMIT = 200


def now() -> datetime:
    return datetime.now(UTC)


async def accept(
    order: RunOrder, *, status: str = QUEUED, patience: float = outages.PATIENCE_SECONDS
) -> Run:
    """Record a run the service has taken on, before any work is queued for it.

    Retried for up to `patience` seconds while the database does not answer,
    then Unavailable; the API passes 0, so that its caller hears at once.
    """
    attempts = 0

    async def record() -> Run:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            # The last attempt may have been committed, its answer lost.
            earlier = await Run.get_or_none(id=order.run_id)
            if earlier is not None:
                return earlier
        return await Run.create(
            id=order.run_id,
            app_id=order.app_id,
            task_id=order.task_id,
            task_name=order.task_name,
            mode=order.mode,
            status=status,
            environment=order.environment,
            page_version=order.page_version,
            fire_at=datetime.fromisoformat(order.fire_at) if order.fire_at else None,
            order=order.to_message(),
        )

    return await db.retrying(record, f"recording run {order.run_id}", patience)


async def withdraw(run_id: str) -> bool:
    """Delete a run recorded but never queued; False if a worker took it anyway.

    For a run whose job could not be queued: it was never accepted, so it
    leaves no record and no log entry. Only a queued run is deleted, so a
    job that reached Redis after all, and started, goes on.
    """
    return bool(await Run.filter(id=run_id, status=QUEUED).delete())


async def start(
    run_id: str, worker: str, limit: float, patience: float = outages.PATIENCE_SECONDS
) -> RunOrder | None:
    """Take a queued run for this worker; None if it is not queued any more."""
    tried: list[datetime] = []

    async def take() -> bool:
        started = now()
        tried.append(started)
        taken = await Run.filter(id=run_id, status=QUEUED).update(
            status=RUNNING,
            worker=worker,
            started_at=started,
            lease_until=started + timedelta(seconds=limit + LEASE_MARGIN),
        )
        if taken or len(tried) == 1:
            return bool(taken)
        # A retry: an earlier attempt may have taken the run, its answer lost.
        return await Run.filter(
            id=run_id, status=RUNNING, worker=worker, started_at__in=tried
        ).exists()

    if not await db.retrying(take, f"starting run {run_id}", patience):
        return None
    run = await db.retrying(lambda: Run.get(id=run_id), f"loading run {run_id}")
    return RunOrder.from_message(run.order)


async def finish(
    order: RunOrder,
    outcome: RunOutcome,
    duration_ms: int,
    patience: float = outages.PATIENCE_SECONDS,
) -> TaskLog | None:
    """End a running run with its outcome and log entry.

    None when the run had already ended meanwhile (cancelled, or declared lost
    by another worker): its one log entry was written then, and this outcome
    is dropped. Retried for up to `patience` seconds while the database does
    not answer.
    """
    attempts = 0

    async def end() -> TaskLog | None:
        nonlocal attempts
        attempts += 1
        entry = await _end_running(order, outcome, duration_ms)
        if entry is not None or attempts == 1:
            return entry
        # A retry: an earlier attempt may have ended the run, its answer lost.
        return await _own_earlier_end(order.run_id, outcome)

    return await db.retrying(end, f"ending run {order.run_id}", patience)


async def _end_running(
    order: RunOrder, outcome: RunOutcome, duration_ms: int
) -> TaskLog | None:
    async with in_transaction():
        ended = await Run.filter(id=order.run_id, status=RUNNING).update(
            status=final_status(outcome),
            finished_at=now(),
            lease_until=None,
            order=None,
            error_type=_error_type(outcome),
        )
        if not ended:
            return None
        entry = await record_run(order, outcome, duration_ms)
        await Run.filter(id=order.run_id).update(log_id=entry.id)
    return entry


async def _own_earlier_end(run_id: str, outcome: RunOutcome) -> TaskLog | None:
    """The log entry with which this outcome already ended the run, if it did.

    A cancel ends a run `cancelled`, a lost worker `failed` with `WorkerLost`:
    neither pair of status and error type is ever a worker's own outcome, so a
    match is this outcome's own write.
    """
    run = await Run.get_or_none(id=run_id)
    if run is None or run.log_id is None:
        return None
    if (run.status, run.error_type) != (final_status(outcome), _error_type(outcome)):
        return None
    return await TaskLog.get_or_none(id=run.log_id)


def _error_type(outcome: RunOutcome) -> str | None:
    return outcome.error.error_type if outcome.error else None


async def end_without_running(
    run: Run, expected: Sequence[str], status: str, error: RunError
) -> TaskLog | None:
    """End a run that will not finish normally, with a failed log entry.

    For a run cancelled by its caller, or whose worker was lost: the update is
    guarded by `expected`, so only one of these can win, and only once.
    """
    order = RunOrder.from_message(run.order) if run.order else None
    async with in_transaction():
        ended = await Run.filter(id=run.id, status__in=list(expected)).update(
            status=status,
            finished_at=now(),
            lease_until=None,
            order=None,
            error_type=error.error_type,
        )
        if not ended or order is None:
            return None
        duration = _elapsed_ms(run)
        entry = await record_run(order, RunOutcome(error=error), duration)
        await Run.filter(id=run.id).update(log_id=entry.id)
    return entry


async def cancel(app_id: int, run_id: str) -> tuple[Run, TaskLog]:
    """End a queued or running run of the app as cancelled, with its log entry."""
    run = await find_run(app_id, run_id)
    entry = None
    if run.status in ACTIVE:
        error = RunError(CANCELLED_ERROR, "the run was cancelled by its caller")
        entry = await end_without_running(run, ACTIVE, CANCELLED, error)
    if entry is None:
        run = await find_run(app_id, run_id)
        raise BadInput(
            f"run {run_id!r} has already ended ({run.status}); only a queued or "
            "running run can be cancelled"
        )
    return await find_run(app_id, run_id), entry


async def lost_runs(moment: datetime, limit: int = 100) -> list[Run]:
    """Running runs whose lease ran out: their worker died or hung."""
    return await Run.filter(status=RUNNING, lease_until__lt=moment).limit(limit)


async def find_run(app_id: int, run_id: str) -> Run:
    run = await Run.get_or_none(id=run_id, app_id=app_id)
    if run is None:
        raise NotFound(f"run {run_id!r}: no such run in this app")
    return run


async def list_runs(
    app_id: int,
    task_id: int | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[Run]:
    """The app's runs, newest first, optionally of one task or one status."""
    limit = check_page_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
    if status is not None:
        check_known("status", status, "run status", STATUSES)
    query = Run.filter(app_id=app_id)
    if task_id is not None:
        query = query.filter(task_id=task_id)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("-created_at", "-id").limit(limit)


def final_status(outcome: RunOutcome) -> str:
    if outcome.ok:
        return COMPLETED
    return TIMED_OUT if outcome.timed_out else FAILED


def run_message(run: Run) -> dict[str, Any]:
    """A run's status as announced to `runUpdates` subscribers."""
    return {
        "runId": run.id,
        "taskId": run.task_id,
        "status": run.status,
        "logId": run.log_id,
        "errorType": run.error_type,
    }


def _elapsed_ms(run: Run) -> int:
    if run.started_at is None:
        return 0
    return round((now() - run.started_at).total_seconds() * 1000)
