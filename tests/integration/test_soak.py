"""The soak under faults (bench/soak.py), 60 seconds of it: two replicas on one Redis, two
llama-servers and the cloud stand-in, mixed traffic in every dialect while a llama-server is
killed, another frozen, Redis restarted, the policy broken and mended, and a replica restarted."""

from __future__ import annotations

from pathlib import Path

from bench.soak import run

CONCURRENCY = 16


def test_a_minute_under_faults_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    report = run(60.0, CONCURRENCY, tmp_path)
    report.print()
    answered = sum(report.answered.values())
    assert report.sent == answered + sum(report.failed.values()) + report.hung_up  # one answer each
    assert report.failures == 0, report.failed  # only a stream cut after its first byte may fail
    assert answered > 1000 and set(report.answered) >= {"local1", "local2", "cloud"}
    assert report.busy_slots == 0
    replica = report.processes["replica 1"]
    tasks_before, tasks_after = replica["tasks"]
    assert tasks_after - tasks_before <= 4
    # connection pools (to each backend and to Redis) fill up to about the concurrency; beyond
    # that, a growing count is a leak
    fds_before, fds_after = replica["fds"]
    assert fds_after - fds_before <= 2 * CONCURRENCY + 16
    rss_before, rss_after = replica["RSS MiB"]
    assert rss_after - rss_before < 64
