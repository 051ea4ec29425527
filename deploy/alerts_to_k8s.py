"""Writes k8s/base/prometheusrule.yaml from deploy/alerts.yml, so both deployments get the same alert rules.

    python3 deploy/alerts_to_k8s.py           rewrite the PrometheusRule
    python3 deploy/alerts_to_k8s.py --check   exit 1 if it is out of date (deploy/lint.sh runs this)

Only PyYAML is needed (deploy/lint.sh runs it with its tools venv, where kubernetes-validate brings PyYAML).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "deploy" / "alerts.yml"
TARGET = ROOT / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/alerts.yml by `python3 deploy/alerts_to_k8s.py`: edit that file, then regenerate.
# Prometheus Operator alert rules. As with the ServiceMonitor, your Prometheus must select this object: by
# default kube-prometheus-stack only picks PrometheusRules labelled with its release name, e.g.
#   kubectl label prometheusrule -n recursolve recursolve release=kube-prometheus-stack
# The `job` label of the scraped series is the Service name, `recursolve`, as in the compose stack.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as `|` blocks, readable as in deploy/alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def render(source: Path = SOURCE) -> str:
    groups = yaml.safe_load(source.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "recursolve",
                     "labels": {"app.kubernetes.io/name": "recursolve", "app.kubernetes.io/component": "server"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python3 deploy/alerts_to_k8s.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
