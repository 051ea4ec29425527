"""Print every PromQL expression of the Grafana dashboard, one per line, ready for Prometheus' API.

Grafana-only variables are replaced by plain values: `$__rate_interval` by a window that holds several
scrapes, `$model` (an "All" multi-value variable) by a regex matching every model. deploy/smoke.sh runs
each printed query against a live Prometheus; the deploy tests read the metric names from them.

    python3 deploy/dashboard_queries.py [dashboard.json] [--rate-interval 1m]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DEFAULT_DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "recursolve.json"
METRIC_RE = re.compile(r"\brecursolve_[a-z0-9_]+")
# Suffixes Prometheus adds to a family's samples; a dashboard may use any of them.
SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def panel_queries(dashboard: dict, rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title + legend, expression) for every target of every panel, rows included."""
    panels = list(dashboard.get("panels", []))
    for panel in list(panels):
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    out = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            expr = expr.replace("$__rate_interval", rate_interval).replace("$model", ".*")
            out.append((f"{panel.get('title')} [{target.get('legendFormat', target.get('refId'))}]", expr))
    return out


def family(metric: str) -> str:
    """recursolve_requests_total -> recursolve_requests; recursolve_x_seconds_bucket -> recursolve_x_seconds."""
    for suffix in SAMPLE_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


def metric_families(queries: list[tuple[str, str]]) -> set[str]:
    return {family(m) for _, expr in queries for m in METRIC_RE.findall(expr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", nargs="?", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument("--rate-interval", default="1m")
    parser.add_argument("--with-titles", action="store_true", help="prefix each query with its panel, tab-separated")
    args = parser.parse_args()
    queries = panel_queries(json.loads(args.dashboard.read_text()), args.rate_interval)
    for title, expr in queries:
        print(f"{title}\t{expr}" if args.with_titles else expr)


if __name__ == "__main__":
    main()
