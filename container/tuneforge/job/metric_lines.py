"""Metric lines: `[metric] name=value k=v`, printed so SageMaker metric definitions can read them
(the regexes are in README.md and contract.py's metric definitions), for every recipe."""

from __future__ import annotations


def metric_fields(name: str, value: float, **context) -> str:
    """`[metric] name=value k=v`, as print_metric prints it."""
    return f"[metric] {name}={value:.6f}" + "".join(f" {k}={v}" for k, v in context.items())


def print_metric(name: str, value: float, **context) -> None:
    extra = "".join(f" {k}={v}" for k, v in context.items())
    print(f"[metric] {name}={value:.6f}{extra}", flush=True)
