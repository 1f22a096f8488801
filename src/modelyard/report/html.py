"""`modelyard report`: one self-contained HTML file (PNGs inlined, also written beside it)
from bench and compare results: latency CDFs, TTFT/TPOT/throughput against load, errors, the
comparison table and each run's configuration."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from modelyard import results
from modelyard.compare import COMPARED, compared_values, difference
from modelyard.errors import ModelyardError
from modelyard.plan.planner import SCHEMA as PLAN_SCHEMA
from modelyard.plan.sweep import sweep_png
from modelyard.report.plan_tables import (
    capacity_cell,
    demand_line,
    option_cells,
    ranked_options,
    status,
)
from modelyard.report.tables import LATENCY_COLUMNS
from modelyard.results import (
    BenchDocument,
    ComparedModel,
    CompareDocument,
    PlanDocument,
    TargetSummary,
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2328;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child,td.l{text-align:left}
tr.diff td{font-weight:600;background:#fff8c5}
tr.better td{font-weight:600;background:#dafbe1}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
pre{background:#f6f8fa;padding:.7rem;font-size:.78rem;overflow:auto;max-height:18rem}
.note{color:#57606a;font-size:.85rem}
"""


class ReportError(ModelyardError):
    """Inputs a report cannot be made from."""


@dataclass(frozen=True)
class _Input:
    file: str
    document: BenchDocument | CompareDocument | PlanDocument


def _load(path: Path) -> _Input:
    try:
        return _Input(path.name, results.read(path))
    except results.ResultsError as exc:
        raise ReportError(str(exc)) from exc


def _png(figure: Any, name: str, out_dir: Path) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    data = buffer.getvalue()
    (out_dir / name).write_bytes(data)
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'


Series = list[tuple[str, ComparedModel | TargetSummary]]


def _series(inputs: list[_Input]) -> Series:
    """(label, summary) for every model of every bench and compare run."""
    out: Series = []
    for item in inputs:
        doc = item.document
        if isinstance(doc, BenchDocument):
            out.extend((f"{model} ({item.file})", summary) for model, summary in doc.models.items())
        elif isinstance(doc, CompareDocument):
            for placement in doc.placements:
                for model, compared in placement.models.items():
                    out.append((f"{model}, {placement.placement}", compared))
    return out


def _cdf_figure(series: Series, key: str, title: str) -> Any | None:
    figure, axis = plt.subplots(figsize=(8, 3.6))
    low, high = np.inf, 0.0
    for label, summary in series:
        values = np.sort(np.asarray(getattr(summary.samples, key), dtype=float))
        values = values[values > 0]
        if values.size:
            axis.plot(values, np.arange(1, values.size + 1) / values.size, label=label)
            low, high = min(low, float(values[0])), max(high, float(values[-1]))
    if high == 0.0:
        plt.close(figure)
        return None
    if high / low > 50:  # runs of very different speeds: keep each one's shape visible
        axis.set_xscale("log")
    axis.set_xlabel(f"{title} (ms)")
    axis.set_ylabel("fraction of requests")
    axis.set_title(f"{title}: cumulative distribution")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def _load_figure(inputs: list[_Input]) -> Any | None:
    """TTFT p99, TPOT p99 and throughput against offered load, per model, across bench runs."""
    points: dict[str, list[tuple[float, TargetSummary]]] = {}
    for item in inputs:
        doc = item.document
        if not isinstance(doc, BenchDocument):
            continue
        load = doc.config["load"]
        x = float(load["concurrency"] or doc.config["workload"]["arrivals"]["rate"])
        for model, summary in doc.models.items():
            points.setdefault(model, []).append((x, summary))
    if not any(len(p) > 1 for p in points.values()):
        return None
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for model, rows in points.items():
        rows.sort(key=lambda r: r[0])
        xs = [r[0] for r in rows]
        axes[0].plot(xs, [r[1].ttft_ms.p99 for r in rows], marker="o", label=model)
        axes[1].plot(xs, [r[1].tpot_ms.p99 for r in rows], marker="o", label=model)
        axes[2].plot(xs, [r[1].throughput_rps for r in rows], marker="o", label=model)
    for axis, title in zip(
        axes, ("TTFT p99 (ms)", "TPOT p99 (ms)", "throughput (req/s)"), strict=True
    ):
        axis.set_title(title)
        axis.set_xlabel("offered load (req/s or concurrency)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return figure


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:,.{digits}f}"
    return html.escape(str(value))


def _summary_table(series: Series) -> str:
    head = (
        "run / model",
        "completed",
        *LATENCY_COLUMNS,
        "req/s",
        "goodput",
        "errors",
    )
    rows = []
    for label, s in series:
        errors = ", ".join(f"{k} {v}" for k, v in s.errors.items() if v) or "none"
        itl = s.itl_ms.p99 if isinstance(s, TargetSummary) else None
        rows.append(
            [
                html.escape(label),
                _fmt(s.completed),
                _fmt(s.ttft_ms.p50),
                _fmt(s.ttft_ms.p99),
                _fmt(s.tpot_ms.p50, 2),
                _fmt(s.tpot_ms.p99, 2),
                _fmt(itl, 2),
                _fmt(s.e2e_ms.p99, 0),
                _fmt(s.throughput_rps, 2),
                _fmt(s.goodput_rps, 2),
                errors,
            ]
        )
    return _table(head, rows)


def _table(head: tuple[str, ...], rows: list[list[str]], classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _compare_table(doc: CompareDocument) -> str:
    head = ("placement", "model", *COMPARED)
    rows, classes = [], []
    by = {p.placement: p.models for p in doc.placements}
    for name, models in by.items():
        for model, m in models.items():
            rows.append([name, html.escape(model), *[_fmt(v) for v in compared_values(m)]])
            classes.append("")
    if {"shared", "isolated"} <= set(by):
        for model, iso in by["isolated"].items():
            shared = by["shared"].get(model)
            if shared is not None:
                pairs = zip(compared_values(shared), compared_values(iso), strict=True)
                rows.append(
                    [
                        "shared vs isolated",
                        html.escape(model),
                        *[difference(a, b) for a, b in pairs],
                    ]
                )
                classes.append("diff")
    kind = "simulated" if doc.simulated else "measured"
    costs = []
    for placement in doc.placements:
        used = ", ".join(f"{n}x {g}" for g, n in placement.gpus.items())
        cost = placement.monthly_usd
        if used:
            money = f", ${cost:,.0f}/month" if cost else ""
            costs.append(f"{html.escape(placement.placement)}: {html.escape(used)}{money}")
    note = f"<p class='note'>GPUs: {'; '.join(costs)} (catalog prices, 730 h)</p>" if costs else ""
    return f"<h3>{html.escape(doc.fleet)} ({kind})</h3>" + _table(head, rows, classes) + note


def _plan_section(doc: dict[str, Any], stem: str, out_dir: Path) -> tuple[str, list[Path]]:
    """A plan's options (the fleet as written first, then cheapest first), its recommendation
    and why (or what binds per model), the fleet's units, and its sweep plot."""
    parts = [
        f"<h3>{html.escape(doc['fleet'])} ({html.escape(doc['_file'])})</h3>"
        f"<p class='note'>{html.escape(demand_line(doc))}</p>"
    ]
    rows, classes = [], []
    for option in ranked_options(doc):
        cells = [html.escape(option["name"]), *option_cells(option)]
        rows.append(
            [*cells, html.escape(", ".join(option["sized_by"])), html.escape(status(option))]
        )
        classes.append("better" if option["name"] == doc["recommended"] else "")
    head = (
        "option",
        "GPUs",
        "$/month",
        "$/1M out tok",
        "GPU util",
        "headroom",
        "sized by",
        "status",
    )
    parts.append(_table(head, rows, classes))
    parts.append(f"<p>{html.escape(doc['why'])}</p>")
    if doc["diagnosis"]:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in doc["diagnosis"])
        parts.append(f"<p>What binds, per model:</p><ul>{items}</ul>")
    written = next((o for o in doc["options"] if o["kind"] == "as written"), None)
    if written is not None and written["units"]:
        unit_rows = [
            [
                html.escape(" + ".join(dict.fromkeys(e["model"] for e in u["engines"]))),
                html.escape(u["label"]),
                str(u["replicas"]),
                html.escape(capacity_cell(u)),
                f"{sum(u['demand_rps'].values()):.2f}",
                html.escape(u["source"]),
            ]
            for u in written["units"]
        ]
        unit_head = ("models", "device", "replicas", "capacity req/s", "demand req/s", "source")
        parts.append("<p>The fleet as written:</p>" + _table(unit_head, unit_rows))
    written_files = []
    if doc.get("sweep"):
        name = f"{stem}-plan-sweep.png"
        sweep_png(doc, out_dir / name)
        encoded = base64.b64encode((out_dir / name).read_bytes()).decode()
        parts.append(f'<img alt="{name}" src="data:image/png;base64,{encoded}">')
        written_files.append(out_dir / name)
    return "".join(parts), written_files


def write_report(paths: list[Path], output: Path) -> list[Path]:
    """Write the HTML report and its PNGs; returns the files written."""
    if not paths:
        raise ReportError("give at least one results file")
    inputs = [_load(p) for p in paths]
    out_dir = output.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = output.stem
    series = _series(inputs)
    written = [output]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>modelyard report</title>",
        f"<style>{STYLE}</style></head><body><h1>modelyard report</h1>",
        f"<p class='note'>{len(inputs)} result files: "
        f"{html.escape(', '.join(i.file for i in inputs))}</p>",
    ]
    compares = [i.document for i in inputs if isinstance(i.document, CompareDocument)]
    if compares:
        parts.append("<h2>Shared vs isolated</h2>")
        parts.extend(_compare_table(d) for d in compares)
    plans = [i for i in inputs if isinstance(i.document, PlanDocument)]
    if plans:
        parts.append("<h2>Capacity and cost plan</h2>")
        for item in plans:
            plan = {**item.document.model_dump(by_alias=True), "_file": item.file}
            if plan["schema"] != PLAN_SCHEMA:
                raise ReportError(
                    f"{item.file}: a plan from an older modelyard ({plan['schema']}): "
                    "run `modelyard plan -o` again"
                )
            section, files = _plan_section(plan, stem, out_dir)
            parts.append(section)
            written.extend(files)
    if series:
        parts.append("<h2>Latency summary (ms)</h2>" + _summary_table(series))
        for key, title in (
            ("ttft_ms", "TTFT"),
            ("e2e_ms", "End-to-end latency"),
            ("tpot_ms", "TPOT"),
        ):
            figure = _cdf_figure(series, key, title)
            if figure is not None:
                name = f"{stem}-{key.removesuffix('_ms')}-cdf.png"
                parts.append(f"<h2>{title}</h2>" + _png(figure, name, out_dir))
                written.append(out_dir / name)
        figure = _load_figure(inputs)
        if figure is not None:
            name = f"{stem}-load.png"
            parts.append("<h2>Against load</h2>" + _png(figure, name, out_dir))
            written.append(out_dir / name)
        else:
            parts.append(
                "<h2>Against load</h2><p class='note'>Give bench results at several rates "
                "or concurrencies to plot TTFT, TPOT and throughput against load.</p>"
            )
    parts.append("<h2>Configuration</h2>")
    for item in inputs:
        document = item.document
        config: Any
        if isinstance(document, BenchDocument):
            config = document.config
        elif isinstance(document, CompareDocument):
            config = document.options
        else:
            extra = document.model_extra or {}
            config = {k: extra.get(k) for k in ("demand", "models", "slo", "notes")}
        parts.append(
            f"<h3>{html.escape(item.file)}</h3><pre>"
            f"{html.escape(json.dumps(config, indent=2, default=str))}</pre>"
        )
    parts.append("</body></html>")
    output.write_text("".join(parts), encoding="utf-8")
    return written
