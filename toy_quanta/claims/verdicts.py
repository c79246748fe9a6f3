"""Verdict rules the claims share, each with its own words (the ledger prints the rule beside the
verdict). A rule is a pair: (judge: Measured -> Verdict, the rule in one sentence)."""

from __future__ import annotations

from typing import Callable

from toy_quanta.claims.ledger import Measured, Verdict

Rule = tuple[Callable[[Measured], Verdict], str]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def number(paper: float, partly: float, what: str = "the paper's value") -> Rule:
    """reproduced: `paper` lies in the measured 95% interval; partly: within `partly` (relative) of
    the interval's nearer end; differs: farther."""

    def judge(m: Measured) -> Verdict:
        if m.value is None or m.interval is None:
            return Verdict("differs", f"nothing measured: {m.text}")
        low, high = m.interval
        if low <= paper <= high:
            return Verdict("reproduced", f"{what} {_fmt(paper)} lies in the interval [{_fmt(low)}, {_fmt(high)}]")
        gap = low - paper if paper < low else paper - high
        side = "below" if paper < low else "above"
        rel = gap / abs(paper) if paper else float("inf")
        verdict = "partly" if rel <= partly else "differs"
        return Verdict(verdict, f"{what} {_fmt(paper)} lies {side} the interval [{_fmt(low)}, {_fmt(high)}] by "
                                f"{_fmt(gap)} ({rel:.0%} of it)")

    text = (f"reproduced if {what} lies in the measured 95% interval; partly if it lies outside by at most "
            f"{partly:.0%} of its size; differs otherwise")
    return judge, text


def checks(partly_at_least: int = 1) -> Rule:
    """A qualitative claim as conditions: reproduced if every one holds, partly if at least
    `partly_at_least` do (but not all), differs otherwise."""

    def judge(m: Measured) -> Verdict:
        held = [name for name, ok in m.checks.items() if ok]
        failed = [name for name, ok in m.checks.items() if not ok]
        if not m.checks:
            return Verdict("differs", f"nothing measured: {m.text}")
        if not failed:
            return Verdict("reproduced", "every condition holds: " + "; ".join(held))
        verdict = "partly" if len(held) >= partly_at_least else "differs"
        return Verdict(verdict, "does not hold: " + "; ".join(failed) + (("; holds: " + "; ".join(held)) if held else ""))

    text = ("reproduced if every condition holds, " + (f"partly if at least {partly_at_least} do" if partly_at_least > 0
                                                        else "partly if some do") + ", differs otherwise")
    return judge, text


def not_tested(reason: str) -> Rule:
    """A claim whose test needs more than a CPU run allows: its reason names the cost."""

    def judge(m: Measured) -> Verdict:
        return Verdict("not tested here", reason + (f" ({m.text})" if m.text else ""))

    return judge, "not tested here: " + reason
