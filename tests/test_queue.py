"""The wire format: JSON jobs, and anything else turned into a rejection instead of a crash."""

from __future__ import annotations

import json
import pickle

from worker.queue import REJECT_FUNCTION, STEP_FUNCTION, deserialize, job_id, serialize


def job(**over: object) -> bytes:
    data = {"t": 1, "f": STEP_FUNCTION, "a": [], "k": {"booking_id": "B", "seq": 0}, "et": 1}
    data.update(over)
    return serialize(data)


def test_round_trip() -> None:
    """Our own jobs come back as they went in."""
    assert deserialize(job())["k"] == {"booking_id": "B", "seq": 0}


def test_pickle_is_rejected_without_running() -> None:
    """A pickle payload is never unpickled: it becomes a reject_job call."""
    payload = pickle.dumps({"f": STEP_FUNCTION})
    out = deserialize(payload)
    assert out["f"] == REJECT_FUNCTION
    assert "not UTF-8" in out["k"]["reason"] or "not JSON" in out["k"]["reason"]


def test_garbage_is_rejected() -> None:
    """Bytes that are not JSON name the problem."""
    assert "not JSON" in deserialize(b"{nope")["k"]["reason"]


def test_json_without_arq_fields_is_rejected() -> None:
    """Valid JSON that is not an arq job is rejected."""
    assert "lacks arq's fields" in deserialize(json.dumps([1]).encode())["k"]["reason"]


def test_unknown_function_is_rejected() -> None:
    """A job naming a function we do not run is rejected, not looked up."""
    assert "unknown job function" in deserialize(job(f="os.system"))["k"]["reason"]


def test_oversized_payload_is_rejected() -> None:
    """An absurdly large job is rejected before parsing."""
    assert "over the" in deserialize(b" " * 70_000)["k"]["reason"]


def test_job_ids_are_deterministic() -> None:
    """A stay's step has one job id, whoever enqueues it."""
    assert job_id("B-7", 3, prefix="codeprov") == "codeprov:B-7:3"


def test_deeply_nested_payload_is_rejected() -> None:
    """JSON nested deep enough to exhaust the parser is rejected, not raised."""
    assert "nested too deeply" in deserialize(b"[" * 60_000)["k"]["reason"]


def test_scheduled_rules_for_servers_without_scheduling_fields() -> None:
    """Without the flag and pending_mutations (Seam's fake), status decides: set, or unset."""
    from worker.seam_models import AccessCode

    base = {"access_code_id": "a", "device_id": "d"}
    legacy = AccessCode.model_validate({**base, "status": "unset", "type": "time_bound"})
    assert legacy.is_scheduled
    ongoing = AccessCode.model_validate({**base, "status": "setting", "type": "ongoing"})
    assert not ongoing.is_scheduled
    modern = {**base, "status": "unset", "type": "time_bound", "pending_mutations": []}
    assert not AccessCode.model_validate({**modern, "is_scheduled_on_device": False}).is_scheduled
    assert AccessCode.model_validate({**modern, "is_scheduled_on_device": True}).is_scheduled
    pending = {**modern, "pending_mutations": [{"mutation_code": "creating"}]}
    assert not AccessCode.model_validate({**pending, "is_scheduled_on_device": True}).is_scheduled


def test_a_prefixed_reconciler_job_passes_the_allow_list() -> None:
    """The reconciler's cron job, named `<prefix>:reconcile_stays`, is one of ours."""
    assert deserialize(job(f="acme:reconcile_stays", k={}))["f"] == "acme:reconcile_stays"
