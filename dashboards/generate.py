"""Generate the Grafana dashboards from one readable list of panels: `python dashboards/generate.py`.

The JSON files beside this script are its output, committed for provisioning; a test checks
they match, and a test with a real Prometheus evaluates every panel's query.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATE = "$__rate_interval"

# (title, unit, [(legend, PromQL)]) — `$backend` selects ccgate backends, `$instance` llama-servers.
GATEWAY = [
    (
        "Requests by backend",
        "reqps",
        [("{{backend}}", f'sum by (backend) (rate(ccgate_requests_total{{backend=~"$backend"}}[{RATE}]))')],
    ),
    ("Requests by rule", "reqps", [("{{rule}}", f"sum by (rule) (rate(ccgate_decisions_total[{RATE}]))")]),
    (
        "Share of answers by backend",
        "percentunit",
        [
            (
                "{{backend}}",
                f'sum by (backend) (rate(ccgate_requests_total{{outcome="ok"}}[{RATE}])) / scalar(sum(rate(ccgate_requests_total{{outcome="ok"}}[{RATE}])))',
            )
        ],
    ),
    (
        "Fallbacks by reason",
        "reqps",
        [
            (
                "{{from_backend}} → {{to_backend}}: {{reason}}",
                f"sum by (from_backend, to_backend, reason) (rate(ccgate_fallbacks_total[{RATE}]))",
            )
        ],
    ),
    (
        "Failed requests by outcome",
        "reqps",
        [("{{outcome}}", f'sum by (outcome) (rate(ccgate_requests_total{{outcome!="ok"}}[{RATE}]))')],
    ),
    (
        "Request duration p50 / p95",
        "s",
        [
            (
                "p50 {{backend}}",
                f'histogram_quantile(0.5, sum by (le, backend) (rate(ccgate_request_duration_seconds_bucket{{backend=~"$backend"}}[{RATE}])))',
            ),
            (
                "p95 {{backend}}",
                f'histogram_quantile(0.95, sum by (le, backend) (rate(ccgate_request_duration_seconds_bucket{{backend=~"$backend"}}[{RATE}])))',
            ),
        ],
    ),
    ("Backend health (1 up)", "none", [("{{backend}}", 'ccgate_backend_healthy{backend=~"$backend"}')]),
    (
        "Breaker (0 closed, 1 half-open, 2 open)",
        "none",
        [("{{backend}}", 'ccgate_backend_breaker_state{backend=~"$backend"}')],
    ),
    (
        "Tool calls by outcome",
        "reqps",
        [
            (
                "{{backend}} {{outcome}}",
                f"sum by (backend, outcome) (rate(ccgate_tool_calls_total[{RATE}]))",
            )
        ],
    ),
    (
        "Shared state: Redis up / errors per second",
        "none",
        [
            ("redis up", "max(ccgate_state_redis_up)"),
            ("errors/s", f"sum(rate(ccgate_state_redis_errors_total[{RATE}]))"),
        ],
    ),
    ("Policy reloads", "none", [("{{result}}", "sum by (result) (ccgate_policy_reloads_total)")]),
    (
        "Handoffs to the cloud by action",
        "reqps",
        [("{{backend}} {{action}}", f"sum by (backend, action) (rate(ccgate_handoffs_total[{RATE}]))")],
    ),
    (
        "Tokens per second by team (team keys)",
        "none",
        [("{{team}} {{place}}", f"sum by (team, place) (rate(ccgate_team_tokens_total[{RATE}]))")],
    ),
    (
        "Local vs cloud share of the team's tokens",
        "percentunit",
        [
            (
                "{{place}}",
                f"sum by (place) (rate(ccgate_team_tokens_total[{RATE}])) / scalar(sum(rate(ccgate_team_tokens_total[{RATE}])) > 0)",
            )
        ],
    ),
    (
        "Refused by a key's limits (429) / waiting for a local slot",
        "none",
        [
            ("{{team}} over {{limit}}/s", f"sum by (team, limit) (rate(ccgate_limited_total[{RATE}]))"),
            ("waiting on {{backend}}", "sum by (backend) (ccgate_queue_waiting)"),
        ],
    ),
]

LOCAL_MODELS = [
    (
        "Time to first byte p50 / p95",
        "s",
        [
            (
                "p50 {{backend}}",
                f'histogram_quantile(0.5, sum by (le, backend) (rate(ccgate_time_to_first_byte_seconds_bucket{{backend=~"$backend"}}[{RATE}])))',
            ),
            (
                "p95 {{backend}}",
                f'histogram_quantile(0.95, sum by (le, backend) (rate(ccgate_time_to_first_byte_seconds_bucket{{backend=~"$backend"}}[{RATE}])))',
            ),
        ],
    ),
    (
        "Generation tokens/s",
        "none",
        [
            ("llama-server {{instance}}", 'llamacpp:predicted_tokens_seconds{instance=~"$instance"}'),
            (
                "ccgate p50 {{backend}}",
                f'histogram_quantile(0.5, sum by (le, backend) (rate(ccgate_output_tokens_per_second_bucket{{backend=~"$backend"}}[{RATE}])))',
            ),
        ],
    ),
    ("Prompt tokens/s", "none", [("{{instance}}", 'llamacpp:prompt_tokens_seconds{instance=~"$instance"}')]),
    (
        "Requests processing / deferred",
        "none",
        [
            ("processing {{instance}}", 'llamacpp:requests_processing{instance=~"$instance"}'),
            ("deferred {{instance}}", 'llamacpp:requests_deferred{instance=~"$instance"}'),
        ],
    ),
    (
        "Busy slots",
        "none",
        [
            ("queue {{backend}}", 'ccgate_backend_queue_depth{backend=~"$backend"}'),
            ("slots {{backend}}", 'ccgate_backend_slots{backend=~"$backend"}'),
        ],
    ),
    (
        "Prompt-cache hit ratio",
        "percentunit",
        [
            (
                "{{backend}}",
                f'sum by (backend) (rate(ccgate_tokens_total{{kind="cached",backend=~"$backend"}}[{RATE}])) / '
                f'sum by (backend) (rate(ccgate_tokens_total{{kind=~"cached|input",backend=~"$backend"}}[{RATE}]))',
            )
        ],
    ),
    (
        "Prefix-affinity hit ratio (slot held part of the prompt)",
        "percentunit",
        [
            (
                "{{backend}}",
                f'1 - sum by (backend) (rate(ccgate_prefix_requests_total{{result="miss",backend=~"$backend"}}[{RATE}])) / '
                f'sum by (backend) (rate(ccgate_prefix_requests_total{{backend=~"$backend"}}[{RATE}]))',
            )
        ],
    ),
    (
        "Prompt tokens reused: predicted by the prefix index vs reported by llama.cpp",
        "none",
        [
            (
                "predicted {{backend}}",
                f'sum by (backend) (rate(ccgate_prefix_reused_tokens_total{{backend=~"$backend"}}[{RATE}]))',
            ),
            (
                "reported {{backend}}",
                f'sum by (backend) (rate(ccgate_tokens_total{{kind="cached",backend=~"$backend"}}[{RATE}]))',
            ),
        ],
    ),
    (
        "llama.cpp slot files: saves and restores",
        "ops",
        [
            (
                "{{backend}} {{action}} {{result}}",
                f'sum by (backend, action, result) (rate(ccgate_slot_files_total{{backend=~"$backend"}}[{RATE}]))',
            )
        ],
    ),
    (
        "Tokens by kind",
        "none",
        [
            (
                "{{backend}} {{kind}}",
                f'sum by (backend, kind) (rate(ccgate_tokens_total{{backend=~"$backend"}}[{RATE}]))',
            )
        ],
    ),
]


def variable(name: str, query: str) -> dict:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(uid: str, title: str, panels: list, llama: bool) -> dict:
    variables = [
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"},
        },
        variable("backend", "label_values(ccgate_backend_healthy, backend)"),
    ]
    if llama:
        variables.append(variable("instance", "label_values(llamacpp:requests_processing, instance)"))
    return {
        "uid": uid,
        "title": title,
        "tags": ["ccgate"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(65 + j),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for j, (legend, expr) in enumerate(targets)
                ],
            }
            for i, (panel_title, unit, targets) in enumerate(panels)
        ],
    }


def render() -> dict[str, str]:
    boards = {
        "gateway.json": dashboard("ccgate-gateway", "ccgate: gateway", GATEWAY, llama=False),
        "local-models.json": dashboard("ccgate-local-models", "ccgate: local models", LOCAL_MODELS, llama=True),
    }
    return {name: json.dumps(board, indent=2) + "\n" for name, board in boards.items()}


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
