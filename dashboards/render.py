"""Render dashboard panels from a running Prometheus to a PNG, for the README:

    python dashboards/render.py http://127.0.0.1:9090 dashboards/preview.png [--minutes 5]

Needs matplotlib (not a dependency of ccgate: only this preview uses it).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import httpx

from dashboards.generate import HERE

PANELS = [
    ("gateway.json", "Requests by backend"),
    ("gateway.json", "Fallbacks by reason"),
    ("local-models.json", "Time to first byte p50 / p95"),
    ("local-models.json", "Requests processing / deferred"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument("--minutes", type=float, default=5, help="how far back to plot (default 5)")
    args = parser.parse_args()
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("dashboards/render.py draws with matplotlib: pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    start = end - args.minutes * 60
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))
    for ax, (board, title) in zip(axes.flat, PANELS, strict=True):
        panel = next(p for p in json.loads((HERE / board).read_text())["panels"] if p["title"] == title)
        for target in panel["targets"]:
            expr = (
                target["expr"].replace("$__rate_interval", "30s").replace("$backend", ".*").replace("$instance", ".*")
            )
            params = {"query": expr, "start": start, "end": end, "step": 2}
            for series in httpx.get(args.prometheus + "/api/v1/query_range", params=params, timeout=30).json()["data"][
                "result"
            ]:
                legend = target["legendFormat"]
                for key, value in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                points = [(float(t) - start, float(v)) for t, v in series["values"] if not math.isnan(float(v))]
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], label=legend)
        ax.set_title(f"{board.removesuffix('.json')}: {title}", fontsize=10)
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.output, dpi=80)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
