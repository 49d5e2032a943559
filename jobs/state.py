"""The per-stay state record in Redis, and the results stream the booking system reads.

Keys (prefix `codeprov`, configurable):
- `codeprov:stay:{booking_id}`: one JSON document per stay (StayState). It also holds the last
  seen errors/warnings/mutations of the code, so transitions are computed against what was
  recorded, whichever worker ran the previous check. Expires 30 days after ends_at.
- `codeprov:results`: a stream; one entry each time a stay reaches `scheduled`, `failed` or
  `cancelled` (again after each applied change).
- `codeprov:cancelled:{booking_id}`: a cancel that arrived before the stay itself; holds the
  cancel's revision (or nothing), so a late provision message is ignored. Expires after 90 days.
- `codeprov:stays`: a sorted set of booking ids not yet final, scored by their next due time
  (for `codeprov stats` and the reconciler).
- `codeprov:code:{access_code_id}`: the booking id of the stay holding that code (expires with
  the record), and `codeprov:device:{device_id}`: a set of the lock's stays not yet final. Both
  written by `commit`; Seam's events find their stay through them (jobs/events.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from redis.asyncio import Redis

from jobs.commit_lua import COMMIT, code_index_key, device_index_key
from jobs.payload import Stay, describe
from jobs.records import Applied, CodeRef, Failure, Phase, Slot, report_key, result_entry
from worker.errors import InvalidInput

__all__ = [
    "PART_SEP", "Applied", "CodeRef", "Failure", "Phase", "Slot", "StayState", "StayStore",
    "booking_of", "code_index_key", "device_index_key", "part_id",
]

RETENTION_AFTER_END = timedelta(days=30)
URGENT_WITHIN = timedelta(hours=24)


PART_SEP = "\x1f"  # never in a booking id (printable text): a part's id cannot be a booking's


def part_id(booking_id: str, device_id: str) -> str:
    """The record id of one further lock of a multi-lock stay."""
    return f"{booking_id}{PART_SEP}{device_id}"


def booking_of(record_id: str) -> str:
    """The booking a record id belongs to (itself, or a part's booking)."""
    return record_id.split(PART_SEP, 1)[0]


class StayState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stay: Stay
    part: bool = False  # a further lock of a multi-lock stay; the first lock is the booking's
    pin_shared: bool = False  # the PIN was the first lock's (a refusal: a PIN of its own)
    known_parts: list[str] = Field(default_factory=list)  # locks that have (had) a part record
    revision: int | None = None  # of the last message applied
    action: str = "provision"  # of the last message applied
    cancel_requested: bool = False
    applied: Applied | None = None
    requested: Applied | None = None  # what the last create asked for
    to_delete: list[CodeRef] = Field(default_factory=list)
    previous: CodeRef | None = None  # the code a move left behind, for the outcome
    changed_at: datetime | None = None
    programming_since: datetime | None = None  # when the lock started on the current change
    looked_at: datetime | None = None  # the last read of the code (an event older says less)
    state: Phase = Phase.QUEUED
    seq: int = 0
    access_code_id: str | None = None
    code: str | None = None  # the PIN: chosen before create, confirmed by Seam's answer
    errors: dict[str, datetime] = Field(default_factory=dict)  # error_code -> since
    warnings: dict[str, datetime] = Field(default_factory=dict)
    mutations: dict[str, datetime] = Field(default_factory=dict)
    failure: Failure | None = None
    checks: int = 0
    transient_failures: int = 0
    last_seam_error: str | None = None  # the latest transient failure, for the deadline message
    create_sent: bool = False  # a create may have reached Seam: look before creating again
    create_slot: Slot | None = None  # this stay's turn on the lock's create budget
    pin_conflicts: int = 0
    at_risk_logged: bool = False
    backup_unavailable_logged: bool = False  # jobs/backup.py: no backup to pull, said once
    enqueued_at: datetime
    updated_at: datetime
    next_check_at: datetime | None = None
    scheduled_at: datetime | None = None  # set once scheduled: the stay is guarded from then
    over: bool = False  # the guard reached ends_at: no more steps, Seam removes the code
    reported: str | None = None  # records.report_key of the last results entry
    guard_reason: str | None = None  # why a guarded stay was last told of again
    reprovisions: int = 0  # codes provisioned again after one was deleted outside codeprov
    backup: bool = False  # the current code is a backup pulled for it (jobs/backup.py)
    original_access_code_id: str | None = None  # the code the backup stands in for

    @model_validator(mode="after")
    def _reported_before(self) -> StayState:
        """A record the version before guarding wrote `scheduled` told the booking system so
        already: taken as reported, so its first guard look writes no second entry."""
        if self.reported is None and self.state is Phase.SCHEDULED and not self.grouped:
            self.reported = report_key(self)
        return self

    @property
    def booking_id(self) -> str:
        """The record's id: the booking's, or for a further lock of its stay `part_id`."""
        stay = self.stay
        return part_id(stay.booking_id, stay.device_id) if self.part else stay.booking_id

    @property
    def unsettled(self) -> bool:
        """On its way to an outcome: not scheduled, failed, cancelled or over."""
        return not self.done and self.state is not Phase.SCHEDULED

    @property
    def grouped(self) -> bool:
        """One record of a stay with several locks: its outcome is the group's (jobs/group.py)."""
        return self.part or self.stay.device_ids is not None

    @property
    def done(self) -> bool:
        """No more steps: failed, cancelled, or guarded until its end and over."""
        return self.state in (Phase.FAILED, Phase.CANCELLED) or self.over

    def forget_code(self) -> None:
        """Drop the current code (moved to the delete list, or gone from Seam): the next step
        provisions a new one from scratch."""
        if self.original_access_code_id is not None:  # a backup's original is on the lock too
            was = self.applied or self.requested or Applied.of(self.stay)
            self.to_delete.append(CodeRef(device_id=was.device_id, name=was.name,
                                          access_code_id=self.original_access_code_id))
        self.backup, self.original_access_code_id = False, None
        self.backup_unavailable_logged = False
        self.access_code_id = self.code = None
        self.create_sent, self.requested, self.applied = False, None, None
        self.errors, self.warnings, self.mutations = {}, {}, {}
        self.checks = self.pin_conflicts = 0

    def is_urgent(self, now: datetime) -> bool:
        """Fairness: a stay starting within a day, a change, or a cancel goes ahead of a backlog."""
        starts = self.stay.starts_at  # None: an ongoing code, wanted now
        return self.changed_at is not None or starts is None or starts - now < URGENT_WITHIN

    def public(self, now: datetime | None = None) -> dict[str, Any]:
        """The `codeprov status --json` shape: a contract, keep the field names."""
        ends = self.stay.ends_at
        return {
            "booking_id": self.stay.booking_id,
            "device_id": self.stay.device_id,
            "state": self.state.value,
            "access_code_id": self.access_code_id,
            "errors": sorted(self.errors),
            "warnings": sorted(self.warnings),
            "failure": self.failure.model_dump() if self.failure else None,
            "updated_at": self.updated_at.isoformat(),
            "starts_at": _iso(self.stay.starts_at),
            "ends_at": _iso(self.stay.ends_at),
            "revision": self.revision,
            "backup": self.backup,
            "pending_action": "cancel"
            if self.cancel_requested and not self.state.is_final
            else None,
            # The stay's end has passed: Seam removes the code itself, codeprov looks no more.
            "over": self.over or (ends is not None and now is not None and now >= ends),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class StayStore:
    def __init__(self, redis: Redis, prefix: str = "codeprov", results_maxlen: int = 100_000):
        self.redis = redis
        self.prefix = prefix
        self.results_key = f"{prefix}:results"
        self.index_key = f"{prefix}:stays"
        self._maxlen = results_maxlen
        self._script = redis.register_script(COMMIT)

    def key(self, booking_id: str) -> str:
        return f"{self.prefix}:stay:{booking_id}"

    def tombstone_key(self, booking_id: str) -> str:
        return f"{self.prefix}:cancelled:{booking_id}"

    async def get(self, booking_id: str) -> StayState | None:
        raw = await self.redis.get(self.key(booking_id))
        return None if raw is None else _load(raw, booking_id)

    async def create(self, state: StayState) -> bool:
        """Store a new stay; False if the booking already has a record."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(state.booking_id), _dump(state), nx=True, exat=_expiry(state))
            pipe.zadd(self.index_key, {state.booking_id: state.enqueued_at.timestamp()})
            created, _ = await pipe.execute()
        return bool(created)

    async def commit(self, state: StayState, expected_seq: int) -> bool:
        """Write state if the stored record is still at expected_seq (no other step moved it).

        One script call: the check and the writes of `stage` (record, index, outcome) at once.
        The revision only moves forward: a message may have recorded a newer one at this seq
        (a duplicate with a newer revision), which this write takes over instead of undoing.
        """
        if not state.grouped or not _outcome_may_change(state):
            return await self._commit(state, expected_seq)
        from jobs import group  # the group's outcome, worked out from all its records

        await group.mark(self, state.stay.booking_id)  # a crash from here: the reconciler's
        done = await self._commit(state, expected_seq)
        await group.report(self, state.stay.booking_id, self._maxlen)
        return done

    async def _commit(self, state: StayState, expected_seq: int) -> bool:
        keys = [self.key(state.booking_id), self.index_key, self.results_key,
                device_index_key(self.prefix, state.stay.device_id)]
        if state.access_code_id is not None:
            keys.append(code_index_key(self.prefix, state.access_code_id))
        key = report_key(state)
        report = not state.grouped and key is not None and key != state.reported
        state.reported = key if report else state.reported
        while True:
            args = self._args(state, expected_seq, report)
            if (done := await self._script(keys=keys, args=args)) != 2:
                break
            stored = await self.get(state.booking_id)
            if stored is None or stored.seq != expected_seq:
                return False
            state.revision, state.action = stored.revision, stored.action
        if done == 0 and await self.redis.get(keys[0]) == args[1].encode():
            # Our own write: redis-py resent the script after a timeout, and its first run had
            # already committed. Reporting it lost would drop the step's events and next job.
            return True
        if done < 0:
            raw = await self.redis.get(self.key(state.booking_id))
            if raw is not None:
                _load(raw, state.booking_id)  # raises the clear error for a broken record
            return False
        return bool(done)

    def _args(self, state: StayState, expected_seq: int, report: bool) -> list[Any]:
        due = "" if state.done else str(_due(state))
        expiry = _expiry(state)
        revision = "" if state.revision is None else state.revision
        args: list[Any] = [expected_seq, _dump(state), "" if expiry is None else expiry,
                           state.booking_id, due, revision]
        if report:
            args.append(self._maxlen)
            for field, value in result_entry(state).items():
                args += [field, value]
        return args

    def stage(self, pipe: Any, state: StayState) -> None:
        """Queue a message's write of a record on a MULTI pipeline (record and index). It tells
        the booking system nothing: only a step's commit reaches an outcome."""
        pipe.set(self.key(state.booking_id), _dump(state), exat=_expiry(state))
        self._index(pipe, state)

    def load(self, raw: bytes | str | None, booking_id: str) -> StayState | None:
        return None if raw is None else _load(raw, booking_id)

    def _index(self, pipe: Any, state: StayState) -> None:
        if state.done:
            pipe.zrem(self.index_key, state.booking_id)
        else:
            pipe.zadd(self.index_key, {state.booking_id: _due(state)})


def _outcome_may_change(state: StayState) -> bool:
    """Whether a grouped record's commit may change its group's outcome: it reached one, or
    was scheduled since its last change (guarded: it may leave). A lock still on its way (a
    part waiting for the first lock's PIN commits every second or so) changes nothing."""
    return state.state.is_final or state.scheduled_at is not None or state.over


def _due(state: StayState) -> float:
    """The index's score: when the stay's next step is due."""
    return (state.next_check_at or state.updated_at).timestamp()


def _dump(state: StayState) -> str:
    """Compact JSON (defaults left out: ~1 KB per stay matters), always with state and seq."""
    data = state.model_dump(mode="json", exclude_defaults=True)
    data["state"], data["seq"] = state.state.value, state.seq
    return json.dumps(data, separators=(",", ":"))


def _load(raw: bytes | str, booking_id: str) -> StayState:
    try:
        return StayState.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(
            f"stored state of booking {booking_id!r} is invalid: {describe(exc)}"
        ) from None


def _expiry(state: StayState) -> int | None:
    if state.stay.ends_at is None:
        return None
    return int((state.stay.ends_at + RETENTION_AFTER_END).timestamp())
