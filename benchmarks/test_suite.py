"""The suite's self-judging: targets turned into ``met`` / ``MISSED`` on fake rows
(no timing here), the table's columns and the summary line.

    pytest benchmarks/test_suite.py
"""

from __future__ import annotations

import math

import pytest

import suite
from suite import MET, MISSED, judge, row


@pytest.mark.parametrize("value,target,want", [
    (1.2, ("<=", 1.5), MET),
    (1.5, ("<=", 1.5), MET),           # the bound itself meets an "at most" target
    (1.500001, ("<=", 1.5), MISSED),
    (5.0, (">=", 5.0), MET),
    (0.39, (">=", 5.0), MISSED),
    (7.0, (">=", 5.0), MET),
    (math.nan, ("<=", 3.0), MISSED),   # a failed measurement misses its target
    (math.inf, (">=", 5.0), MISSED),
    (2.0, None, ""),                   # no target, no verdict
    (math.nan, None, ""),
])
def test_judge(value, target, want):
    assert judge(value, target) == want


def test_judge_refuses_an_unknown_comparison():
    with pytest.raises(ValueError, match="must be '<=' or '>='"):
        judge(1.0, ("<", 2.0))


def fake_rows() -> list[dict]:
    return [
        row("kernels", "forward float64 N=1024 cpu", 1.5e9, "pairs/s", "0.7 ms/call"),
        row("model cost", "model-policy step / force evaluation N=1024", 1.2, "x",
            target=("<=", 1.5)),
        row("aarseth cost", "Aarseth derivative pass / force evaluation N=1024", 3.4, "x",
            target=("<=", 3.0)),
        row("ensemble", "aits fixed dt / REBOUND leapfrog B=4096", 0.39, "x",
            target=(">=", 5.0)),
        row("integrators", "symmetric: whole-run / first-period max |dE/E|", 1.0, "x",
            target=("<=", 1.5)),
    ]


def test_rows_carry_target_and_verdict():
    rows = fake_rows()
    assert [r["verdict"] for r in rows] == ["", MET, MISSED, MISSED, MET]
    assert rows[0]["target"] is None
    assert rows[3]["target"] == {"op": ">=", "bound": 5.0}


def test_table_has_target_and_verdict_columns():
    lines = suite.table(fake_rows()).splitlines()
    assert lines[0] == "| section | case | value | unit | target | verdict | detail |"
    assert len(lines) == 2 + 5
    cells = {line.split(" | ")[1]: line.split(" | ") for line in lines[2:]}
    assert cells["model-policy step / force evaluation N=1024"][4:6] == ["<= 1.5x", MET]
    assert cells["aits fixed dt / REBOUND leapfrog B=4096"][4:6] == [">= 5x", MISSED]
    assert cells["forward float64 N=1024 cpu"][4:6] == ["", ""]


def test_target_text_spaces_units_other_than_x():
    assert suite.target_text(("<=", 40.0), "ms") == "<= 40 ms"
    assert suite.target_text(("<=", 1.5), "x") == "<= 1.5x"
    assert suite.target_text(None, "x") == ""


def test_summary_lists_what_was_missed():
    rows = fake_rows()
    assert suite.summary(rows) == (
        f"targets: 2 met, 2 {MISSED} (aarseth cost: Aarseth derivative pass / force evaluation "
        "N=1024; ensemble: aits fixed dt / REBOUND leapfrog B=4096)")
    assert suite.summary([r for r in rows if r["verdict"] != MISSED]) == f"targets: 2 met, 0 {MISSED}"
    assert suite.summary(rows[:1]) == "targets: none in this run"
