#!/usr/bin/env python3
"""Writes deploy/kubernetes/prometheusrule.yaml from deploy/alerts.yml.

deploy/alerts.yml owns Courier's alerting rules (promtool checks and unit-tests it); the
Prometheus Operator's PrometheusRule carries the very same `groups:`, indented under `spec:`
with its comments, so there is one owner for the rules.

Usage: scripts/gen-prometheusrule.py [--check]
  --check   write nothing; exit 1 if the checked-in file is not what would be generated
            (scripts/check-deploy.sh runs this)
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "alerts.yml"
OUT = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/alerts.yml by scripts/gen-prometheusrule.py: do not edit; change
# alerts.yml (and its tests, alerts_test.yml) and run the script again.
# scripts/check-deploy.sh fails when this file and alerts.yml differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: courier
  labels:
    app.kubernetes.io/name: courier
spec:
"""


def generate(alerts_text: str) -> str:
    lines = alerts_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "groups:")
    except StopIteration:
        raise SystemExit(f"{ALERTS}: no top-level `groups:` line")
    body = ["  " + line if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body).rstrip() + "\n"


def main() -> None:
    args = sys.argv[1:]
    if args not in ([], ["--check"]):
        raise SystemExit(__doc__)
    wanted = generate(ALERTS.read_text())
    rel = OUT.relative_to(ROOT)
    if args == ["--check"]:
        current = OUT.read_text() if OUT.exists() else ""
        if current != wanted:
            print(f"{rel} is not generated from deploy/alerts.yml: run scripts/gen-prometheusrule.py")
            sys.exit(1)
        print(f"{rel} matches deploy/alerts.yml")
        return
    OUT.write_text(wanted)
    print(f"wrote {rel}")


if __name__ == "__main__":
    main()
