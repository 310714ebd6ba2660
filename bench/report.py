"""Results files: a markdown table per scenario (one column per server + a ratio), JSON, PNG."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import psutil


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def ratio(a, b) -> str:
    try:
        if not b or math.isnan(a) or math.isnan(b):
            return "-"
        return f"{a / b:.2f}"
    except TypeError:
        return "-"


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    path = directory / f"{stem}{suffix}"
    n = 2
    while path.exists():
        path = directory / f"{stem}-{n}{suffix}"
        n += 1
    return path


def markdown(scenario: str, results: dict, failures: dict[str, str], options: dict,
             ratio_pair: tuple[str, str] | None, chart: Path | None) -> str:
    names = list(results)
    header = ["figure", *names]
    show_ratio = ratio_pair and all(n in results for n in ratio_pair)
    if show_ratio:
        header.append(f"{ratio_pair[0]}/{ratio_pair[1]}")
    lines = [f"# {scenario} ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    info = machine_info()
    lines += [f"Machine: {info['cpus']} vCPU {info['cpu_model']}, {info['ram_gb']} GB, "
              f"Python {info['python']}; server, client and kernel share the CPUs, loopback only.",
              "", "Options: " + ", ".join(f"{k}={v}" for k, v in options.items()), ""]
    if names:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        figures = {n: results[n].figures() for n in names}
        for label in figures[names[0]]:
            row = [label] + [fmt(figures[n].get(label)) for n in names]
            if show_ratio:
                a, b = (figures[n].get(label) for n in ratio_pair)
                row.append(ratio(a, b))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    for name in names:
        missing = getattr(results[name], "sample_missing", "")
        errors = getattr(results[name], "errors", None) or []
        if missing:
            lines += [f"- {name}: one sample subscriber never got {missing}"]
        for error in errors[:3]:
            lines += [f"- {name}: {error[:200]}"]
    if any(line.startswith("- ") for line in lines):
        lines.append("")
    for name, reason in failures.items():
        lines += [f"**{name}: not measured.** {reason.splitlines()[0] if reason else ''}", ""]
    if chart:
        lines += [f"![latency percentiles]({chart.name})", ""]
    return "\n".join(lines)


def latency_chart(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart (pip install matplotlib)")
        return None
    keys = ["p50", "p90", "p99", "p99.9", "max"]
    names = [n for n, r in results.items() if getattr(r, "latency_ms", None)]
    if not names:
        return None
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, name in enumerate(names):
        values = [results[name].latency_ms.get(k, 0) for k in keys]
        xs = [x + i * width for x in range(len(keys))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=7)
    first = results[names[0]]
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))], keys)
    ax.set_ylabel("publish -> receive latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Latency: {first.rate:g} events/s to {first.subscribers} subscribers, "
                 f"{first.seconds:g} s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(scenario: str, results: dict, failures: dict[str, str], options: dict,
          out_dir: Path, ratio_pair: tuple[str, str] | None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = unique_path(out_dir, f"{time.strftime('%Y-%m-%d')}-{scenario}", ".md")
    stem = md_path.stem
    chart = None
    if scenario == "latency" and results:
        chart = latency_chart(results, out_dir / f"{stem}.png")
    md_path.write_text(markdown(scenario, results, failures, options, ratio_pair, chart))
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps({
        "scenario": scenario,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info(),
        "options": options,
        "results": {n: asdict(r) if is_dataclass(r) else r for n, r in results.items()},
        "failures": failures,
    }, indent=2, default=str))
    return [p for p in (md_path, json_path, chart) if p]
