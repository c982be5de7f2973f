"""Turn side-by-side runs into Markdown tables, target verdicts and a PNG chart.

Every number shown is a median over repetitions, with min and max. Ratios are
*paired*: repetition ``i`` of competitor A is divided by repetition ``i`` of
competitor B (the two ran back to back in the same round, see
:mod:`bench.driver`), and the median of those ratios is reported. On a shared,
noisy machine that is far steadier than dividing two medians taken minutes
apart.
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass

from bench.driver import Case, Outcome

__all__ = [
    "Target",
    "summary",
    "paired_ratio",
    "rate_table",
    "metrics_table",
    "scale_table",
    "targets_table",
    "machine",
    "chart",
]

#: Metrics of the idle/scale workload: (key, column title, format).
SCALE_METRICS = (
    ("cpu_percent", "CPU while idle (% of one core)", "{:.2f}"),
    ("rss_socket_kib", "RSS per socket (KiB)", "{:.1f}"),
    ("rss_waiting_kib", "RSS per socket + task waiting in recv (KiB)", "{:.1f}"),
    ("wake_all_ms", "time to wake all (ms)", "{:.1f}"),
)


def summary(outcome: Outcome, metric: str) -> tuple[float, float, float] | None:
    """(median, min, max) of ``metric`` over the successful runs, or None."""
    values = [r[metric] for r in outcome.runs if r is not None and metric in r]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def paired_ratio(a: Outcome, b: Outcome, metric: str = "rate") -> float | None:
    """Median over repetitions of ``a[i] / b[i]`` (runs from the same round)."""
    ratios = [
        ra[metric] / rb[metric]
        for ra, rb in zip(a.runs, b.runs)
        if ra is not None and rb is not None and metric in ra and rb.get(metric)
    ]
    return statistics.median(ratios) if ratios else None


def _ratio_cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _failure_cell(outcome: Outcome) -> str:
    error = outcome.error or "no run"
    if error == "n/a" or error.startswith("unavailable"):
        return error[:80]
    return f"failed: {error[:80]}"


def rate_table(
    case: Case, outcomes: dict[str, Outcome], references: tuple[str, ...] = ("ceiling", "zmq.green")
) -> str:
    """Markdown table of one rate case: median, min, max, ratios vs ``references``
    and the median CPU time per operation (whole process, all threads)."""
    refs = [r for r in references if r in outcomes]
    head = ["competitor", f"median ({case.unit})", "min", "max"] + [f"× {r}" for r in refs] + ["CPU µs/op"]
    lines = [f"**{case.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, outcome in outcomes.items():
        s = summary(outcome, "rate")
        if s is None:
            if outcome.error != "n/a":
                lines.append(f"| {name} | {_failure_cell(outcome)} |" + " |" * (len(head) - 2))
            continue
        cells = [name, f"{s[0]:,.0f}", f"{s[1]:,.0f}", f"{s[2]:,.0f}"]
        cells += [_ratio_cell(paired_ratio(outcome, outcomes[r])) if r != name else "1.00×" for r in refs]
        cpu = summary(outcome, "cpu_us_per_op")
        cells.append("–" if cpu is None else f"{cpu[0]:.2f}")
        if outcome.error:  # some repetitions failed
            cells[0] += f" ({outcome.error[:60]})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metrics_table(
    case: Case,
    outcomes: dict[str, Outcome],
    metrics: tuple[tuple[str, str, str], ...],
    ratio_metric: str | None = None,
    reference: str | None = None,
    ratio_title: str | None = None,
) -> str:
    """Markdown table of a case with several metrics, each as median [min–max].

    ``metrics`` is a sequence of (key, column title, format). With
    ``ratio_metric`` and ``reference``, a last column gives each competitor's
    median of that metric over the reference's median.
    """
    head = ["competitor"] + [title for _, title, _ in metrics]
    if ratio_metric and reference:
        head.append(ratio_title or f"{ratio_metric} × {reference}")
    lines = [f"**{case.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = metrics[0][0]
    ref = outcomes.get(reference) if reference else None
    for name, outcome in outcomes.items():
        if summary(outcome, first) is None:
            if outcome.error != "n/a":
                lines.append(f"| {name} | {_failure_cell(outcome)} |" + " |" * (len(head) - 2))
            continue
        cells = [name]
        for key, _, fmt in metrics:
            med, lo, hi = summary(outcome, key)
            cells.append(f"{fmt.format(med)} [{fmt.format(lo)}–{fmt.format(hi)}]")
        if ratio_metric and reference:
            mine, theirs = summary(outcome, ratio_metric), ref and summary(ref, ratio_metric)
            cells.append(f"{mine[0] / theirs[0]:.2f}×" if theirs and theirs[0] > 0 else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(case: Case, outcomes: dict[str, Outcome], reference: str = "ceiling") -> str:
    """The idle/scale case: CPU, memory per socket, wake-all time; RSS vs ``reference``."""
    return metrics_table(
        case, outcomes, SCALE_METRICS, "rss_socket_kib", reference, f"RSS per socket × {reference}"
    )


@dataclass(frozen=True)
class Target:
    """A performance target: ``competitor`` vs ``reference`` on ``case_key``.

    ``kind`` says how ``threshold`` is checked: ``"ratio_min"`` (the paired
    ratio to ``reference`` is >= threshold), ``"min"`` / ``"max"`` (the median
    itself is >= / <= threshold) or ``"ratio_max"`` (median over the
    reference's median <= threshold).
    """

    label: str
    case_key: str
    competitor: str
    reference: str | None
    threshold: float
    metric: str = "rate"
    kind: str = "ratio_min"


def _measure(target: Target, outcomes: dict[str, Outcome]) -> float | None:
    mine = outcomes.get(target.competitor)
    if mine is None:
        return None
    if target.kind == "ratio_min":
        ref = outcomes.get(target.reference)
        return None if ref is None else paired_ratio(mine, ref, target.metric)
    s = summary(mine, target.metric)
    if s is None:
        return None
    if target.kind in ("min", "max"):
        return s[0]
    ref = outcomes.get(target.reference)
    r = ref and summary(ref, target.metric)
    return s[0] / r[0] if r and r[0] > 0 else None


def targets_table(targets: list[Target], results: dict[str, dict[str, Outcome]]) -> str:
    """Markdown table: each target, its measured value and met / MISSED."""
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for t in targets:
        if t.case_key not in results:
            continue
        value = _measure(t, results[t.case_key])
        if value is None:
            lines.append(f"| {t.label} | – | not measured |")
            continue
        ok = value >= t.threshold if t.kind in ("ratio_min", "min") else value <= t.threshold
        # three decimals: 0.947 must not read as a missed "0.95"
        shown = f"{value:.3f}" if t.kind in ("min", "max") else f"{value:.3f}×"
        lines.append(f"| {t.label} | {shown} | {'met' if ok else '**MISSED**'} |")
    return "\n".join(lines)


def machine(versions: dict[str, dict[str, str]]) -> str:
    """One paragraph describing the machine, its load and the software measured."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    merged: dict[str, str] = {}
    for v in versions.values():
        merged.update(v)
    software = ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"load average at the end {load}. Software: {software}."
    )


def chart(
    cases: list[Case], results: dict[str, dict[str, Outcome]], path: str, reference: str = "ceiling"
) -> str | None:
    """Grouped bars, one group per rate case: each competitor's median rate as a
    fraction of ``reference``'s (paired). Returns an error string if matplotlib
    is missing, else None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: {exc}"
    rate_cases = [
        c
        for c in cases
        if reference in results[c.key] and summary(results[c.key][reference], "rate") is not None
    ]
    names: list[str] = []
    for c in rate_cases:
        for n in results[c.key]:
            if n not in names:
                names.append(n)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rate_cases)), 4.5))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, c in enumerate(rate_cases):
            outcome = results[c.key].get(name)
            ratio = outcome and paired_ratio(outcome, results[c.key][reference])
            if ratio is not None:
                xs.append(i + j * width - 0.4 + width / 2)
                ys.append(ratio)
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(rate_cases)))
    ax.set_xticklabels([c.key for c in rate_cases], rotation=20, ha="right", fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel(f"rate / {reference} (paired median)")
    ax.set_title("greenzmq benchmark: speed relative to the single-thread ceiling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
