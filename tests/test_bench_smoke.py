"""Smoke runs of issue 8's benchmarks at tiny sizes: each runs and writes the JSON it documents.

Figures are not checked: at these sizes they mean nothing. Each benchmark runs as a user runs it
(`python -m bench NAME`), in its own process with its own private Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import ROOT

pytestmark = pytest.mark.slow

MACHINE = {"date", "nproc", "cpu_model", "python", "redis"}
TARGET = {"figure", "value", "unit", "target", "met", "note"}


def bench(name: str, out: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    body: dict[str, Any] = json.loads(out.read_text())
    return body


def check_common(body: dict[str, Any], name: str) -> None:
    assert body["benchmark"] == name
    assert MACHINE <= body["machine"].keys()
    assert body["targets"] and all(TARGET <= t.keys() for t in body["targets"])


def test_pipeline_reports_calls_and_lag_for_codeprov_and_naive(tmp_path: Path) -> None:
    """The pipeline benchmark reports calls per code and detection lag for both implementations."""
    body = bench("pipeline", tmp_path / "pipeline.json", "--stays", "4", "--devices", "2",
                 "--latency", "fixed", "--naive-latency", "fixed", "--median", "0.5",
                 "--timeout", "60")
    check_common(body, "pipeline")
    runs = body["results"]["runs"]
    assert [(r["impl"], r["latency"]) for r in runs] == [("codeprov", "fixed"), ("naive", "fixed")]
    for r in runs:
        assert r["scheduled"] == 4
        assert {"p50", "p95"} <= r["calls_per_code"].keys() <= r["lag_fraction"].keys()
        assert r["unattributed_calls"] == 0


def test_overhead_reports_throughput_ratio_and_first_request(tmp_path: Path) -> None:
    """The overhead benchmark compares codes/s with arq's no-op jobs/s and with the ceiling of
    arq plus a code's two calls on httpx alone, and times first requests."""
    body = bench("overhead", tmp_path / "overhead.json", "--stays", "20", "--noops", "200",
                 "--trials", "2", "--idle", "0.5", "--queue-polls", "default")
    check_common(body, "overhead")
    (variant,) = body["results"]["variants"]
    assert variant["codes_per_s"] > 0 and variant["noop_jobs_per_s"] > 0
    assert variant["http_pairs_per_s"] > 0 and variant["ceiling_codes_per_s"] > 0
    assert variant["first_request_ms"]["n"] == 2


def test_footprint_reports_redis_bytes_and_rss(tmp_path: Path) -> None:
    """The footprint benchmark reports Redis bytes per waiting stay and sampled worker RSS."""
    body = bench("footprint", tmp_path / "footprint.json", "--stays", "40", "--devices", "4",
                 "--workers", "1", "--idle", "0.5", "--sample", "0.1")
    check_common(body, "footprint")
    result = body["results"]
    assert result["waiting_in_sample"] == "40/40"
    assert result["redis_bytes_per_stay"] > 0
    assert result["rss_mb"][0]["max"] > 0 and result["rss_samples"]


def test_report_gathers_the_targets_of_every_results_file(tmp_path: Path) -> None:
    """The report prints one targets table from whichever results files exist."""
    target = {"figure": "f", "value": 1.0, "unit": "", "target": "<= 2", "met": True, "note": ""}
    machine = {"date": "2026-01-01", "nproc": 2, "cpu_model": "x", "python": "3", "redis": "7"}
    (tmp_path / "footprint.json").write_text(json.dumps(
        {"benchmark": "footprint", "machine": machine, "targets": [target]}))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "report", "--results", str(tmp_path),
         "--out", str(tmp_path / "summary.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pipeline: no results" in done.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["targets"] == [target]


def test_receiver_reports_events_per_s_latency_and_every_event_recorded(tmp_path: Path) -> None:
    """The receiver benchmark reports events/s beside GET /healthz, open-loop latency, CPU per
    phase, no error, and every signed event sent received once by Redis."""
    body = bench("receiver", tmp_path / "receiver.json", "--events", "300", "--warmup", "50",
                 "--rates", "200", "--seconds", "0.5", "--stays", "20")
    check_common(body, "receiver")
    result = body["results"]
    names = [p["name"] for p in result["phases"]]
    assert names == ["warmup", "baseline_healthz", "saturation", "offered_200"]
    assert result["events_per_s"] > 0 and result["baseline_healthz_per_s"] > 0
    assert result["errors"] == 0
    assert result["events_sent"] == result["counts"]["received"] == 50 + 300 + 100
    assert result["lost"] == 0 and result["dedup_keys"] >= result["counts"]["taken"] > 0
    offered = result["phases"][-1]
    assert offered["requests"] == 100 and offered["p99_ms"] >= offered["p50_ms"] > 0


def test_events_reports_lag_and_calls_for_polling_feed_and_webhooks(tmp_path: Path) -> None:
    """The events benchmark runs polling only, the feed and webhooks in one run, each with
    calls per code, detection lag and its feed calls, and webhooks delivered only to the last."""
    body = bench("events", tmp_path / "events.json", "--stays", "4", "--devices", "2",
                 "--median", "0.5", "--workers", "1", "--timeout", "30")
    check_common(body, "events")
    modes = body["results"]["modes"]
    assert [m["mode"] for m in modes] == ["polling", "feed", "webhooks"]
    for m in modes:
        assert m["run"]["scheduled"] == 4
        run = m["run"]
        assert {"p50", "p95"} <= run["calls_per_code"].keys() <= run["lag_fraction"].keys()
        assert m["events_list_calls"] >= 0
    assert not modes[0]["deliveries"] and not modes[1]["deliveries"]
    assert modes[2]["deliveries"].get("200", 0) > 0


def test_guarded_reports_calls_per_guarded_stay_day_by_kind(tmp_path: Path) -> None:
    """The guarded benchmark simulates days of guarded stays with webhooks and polling only and
    reports calls per guarded stay-day by kind of step, every stay scheduled."""
    body = bench("guarded", tmp_path / "guarded.json", "--stays", "6", "--polling-stays", "3",
                 "--devices", "2", "--days", "2", "--tick", "3600")
    check_common(body, "guarded")
    modes = body["results"]["modes"]
    assert [(m["mode"], m["stays"], m["scheduled"]) for m in modes] == [
        ("webhooks", 6, 6), ("polling", 3, 3)]
    for m in modes:
        assert m["guarded_stay_days"] > 0
        assert {"safety", "confirming", "woken", "end", "feed", "total"} <= m["per_stay_day"].keys()


def test_multilock_reports_calls_per_stay_of_one_and_three_locks(tmp_path: Path) -> None:
    """The multilock benchmark runs 1-lock and 3-lock stays in one run and reports Seam calls per
    stay (median, p95, by route) of each, all scheduled, and the 3 x + 1 target."""
    body = bench("multilock", tmp_path / "multilock.json", "--stays", "3", "--codes-per-lock", "3",
                 "--median", "0.3", "--workers", "1", "--timeout", "50")
    check_common(body, "multilock")
    kinds = body["results"]["kinds"]
    assert [(k["kind"], k["locks"], k["stays"], k["scheduled"]) for k in kinds] == [
        ("one_lock", 1, 3, 3), ("three_locks", 3, 3, 3)]
    for k in kinds:
        assert {"p50", "p95"} <= k["calls_per_stay"].keys()
        assert "/access_codes/create" in k["by_route"]
    assert body["results"]["unattributed_calls"] == 0
    assert [t["figure"] for t in body["targets"]] == [
        f"Seam calls of a 3-lock stay, {q}" for q in ("mean", "median", "p95")]
    assert all(isinstance(t["met"], bool) for t in body["targets"])
