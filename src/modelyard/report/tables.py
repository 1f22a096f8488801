"""Rich tables for terminal output. Numbers in, tables out; no computation here."""

from __future__ import annotations

from rich.table import Table

from modelyard.catalog import Catalog
from modelyard.catalog.entries import GIB
from modelyard.compare import COMPARED, PlacementResult, compared_values, difference
from modelyard.engines.launcher import EngineStatus
from modelyard.engines.state import EngineProcess
from modelyard.memory import FitResult, FleetFit
from modelyard.quant import ProfileOption
from modelyard.results import BenchDocument
from modelyard.sim.calibrate import Fit
from modelyard.sim.run import SimResult

# the latency percentiles every results table shows, in this order (ms)
LATENCY_COLUMNS = ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p99", "E2E p99")


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _new_table(
    title: str,
    columns: tuple[str, ...],
    left: tuple[str, ...] | None = None,
    right: tuple[str, ...] = (),
) -> Table:
    """A table titled on the left. With `left`, the other columns are right-aligned (numbers);
    `right` right-aligns just those."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = column in right or (left is not None and column not in left)
        table.add_column(column, justify="right" if numeric else "left")
    return table


def _yes_no(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def fit_table(results: list[FitResult], title: str = "Memory fit") -> Table:
    table = _new_table(
        title,
        (
            "model",
            "quant",
            "device",
            "util",
            "weights GiB",
            "runtime GiB",
            "activ. GiB",
            "KV GiB",
            "KV B/tok",
            "KV tokens",
            "max len",
            "seqs",
            "fits",
        ),
        left=("model", "quant", "device", "fits"),
    )
    for r in results:
        table.add_row(
            r.name or r.model,
            r.quant,
            r.device,
            f"{r.gpu_memory_utilization:.2f}",
            _gib(r.weights_bytes),
            _gib(r.non_torch_bytes),
            _gib(r.activation_peak_bytes),
            _gib(r.kv_budget_bytes),
            f"{r.kv_bytes_per_token:,.0f}",
            f"{r.kv_cache_tokens:,}",
            f"{r.max_model_len:,}",
            f"{r.max_concurrency:.1f}",
            _yes_no(r.fits),
        )
    return table


def fleet_fit_tables(result: FleetFit) -> list[Table]:
    tables = [fit_table(result.models, "Memory fit per model")]
    if result.groups:
        groups = _new_table(
            "Shared groups", ("device", "members", "fractions", "limit", "fits", "why")
        )
        for g in result.groups:
            fractions = ", ".join(f"{k} {v:.2f}" for k, v in g.memory_fractions.items())
            groups.add_row(
                g.device,
                ", ".join(g.members),
                fractions,
                f"{g.memory_limit:.2f}",
                _yes_no(g.fits),
                g.reason,
            )
        tables.append(groups)
    return tables


def quant_table(options: list[ProfileOption], title: str) -> Table:
    table = _new_table(
        title,
        ("profile", "weights GiB", "KV tokens", "engine args", "usable", "why not"),
        right=("weights GiB", "KV tokens"),
    )
    for o in options:
        args = (
            " ".join(o.engine_args) if o.engine_args else ("(none)" if o.engine_args == [] else "-")
        )
        table.add_row(
            o.profile,
            _gib(o.weights_bytes),
            f"{o.fit.kv_cache_tokens:,}",
            args,
            _yes_no(o.supported),
            o.why_not,
        )
    return table


def catalog_tables(catalog: Catalog) -> list[Table]:
    models = _new_table(
        "Models",
        (
            "name",
            "params",
            "layers",
            "hidden",
            "heads/kv",
            "head_dim",
            "ffn",
            "vocab",
            "context",
            "KV B/token (bf16)",
            "source",
        ),
    )
    for name, m in catalog.models.items():
        params = f"{m.params / 1e9:.2f}B"
        if m.active_params:
            params += f" ({m.active_params / 1e9:.0f}B active)"
        models.add_row(
            name,
            params,
            str(m.num_layers),
            str(m.hidden_size),
            f"{m.num_attention_heads}/{m.num_kv_heads}",
            str(m.head_dim),
            str(m.intermediate_size),
            f"{m.vocab_size:,}",
            f"{m.max_context:,}",
            f"{m.kv_bytes_per_token(2):,.0f}",
            m.source,
        )
    gpus = _new_table(
        "GPUs", ("name", "memory", "bandwidth GB/s", "BF16 TFLOPs", "FP8 TFLOPs", "$/GPU-hour")
    )
    for name, g in catalog.gpus.items():
        price = g.price()
        gpus.add_row(
            name,
            f"{g.memory_gb:g} GB",
            f"{g.memory_bandwidth_gbps:g}",
            f"{g.bf16_tflops:g}",
            f"{g.fp8_tflops:g}" if g.fp8_tflops else "-",
            f"{price.usd_per_gpu_hour:.3f} ({price.cloud})" if price else "-",
        )
    quants = _new_table("Quantization profiles", ("name", "bits/weight", "engines"))
    for name, q in catalog.quants.items():
        quants.add_row(name, f"{q.bits_per_weight:g}", ", ".join(q.engines))
    aliases = _new_table("Aliases", ("name", "model", "why"))
    for name, a in catalog.aliases.items():
        aliases.add_row(name, a.model, a.note)
    return [models, gpus, quants, aliases]


def sim_table(result: SimResult) -> Table:
    gpus = ", ".join(f"{count}x {name}" for name, count in result.gpus.items())
    title = (
        f"Simulated {result.fleet} ({result.placement} placement, {gpus}), "
        f"{result.requests:,} requests over {result.duration_s:,.1f} s"
    )
    table = _new_table(
        title,
        (
            "model",
            "done",
            "rejected",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "TPOT p50 ms",
            "TPOT p99 ms",
            "E2E p99 ms",
            "req/s",
            "tok/s",
            "goodput req/s",
            "KV mean",
            "KV max",
            "preempt",
            "cold start s",
        ),
        left=("model",),
    )
    for m in result.models:
        table.add_row(
            m.name,
            f"{m.completed:,}",
            f"{m.rejected:,}",
            f"{m.ttft_ms['p50']:,.1f}",
            f"{m.ttft_ms['p99']:,.1f}",
            f"{m.tpot_ms['p50']:,.1f}",
            f"{m.tpot_ms['p99']:,.1f}",
            f"{m.e2e_ms['p99']:,.0f}",
            f"{m.throughput_rps:,.2f}",
            f"{m.output_tokens_per_s:,.0f}",
            f"{m.goodput_rps:,.2f}",
            f"{m.kv_usage_mean:.0%}",
            f"{m.kv_usage_max:.0%}",
            f"{m.preemptions:,}",
            f"{m.cold_start_s:.1f}",
        )
    return table


def calibration_table(fit: Fit) -> Table:
    c = fit.calibration
    title = (
        f"Calibration {c.name}: mfu {c.mfu:.2f}, bandwidth efficiency "
        f"{c.bandwidth_efficiency:.2f}, serial fraction {c.serial_fraction:.2f}, step "
        f"overhead {c.step_overhead_ms:.2f} ms, per sequence {c.per_seq_overhead_ms:.4f} ms, "
        f"contention slowdown {c.contention_slowdown:.2f}"
    )
    table = _new_table(
        title,
        (
            "model",
            "step",
            "batch",
            "tokens",
            "set",
            "measured ms",
            "predicted ms",
            "error",
        ),
        left=("model", "step", "set"),
    )
    for p in fit.predictions:
        point = p.point
        table.add_row(
            point.model,
            point.kind,
            str(point.batch),
            str(point.context),
            "held out" if point.held_out else "fit",
            f"{point.seconds * 1000:.2f}",
            f"{p.predicted_s * 1000:.2f}",
            f"{p.error:+.1%}",
        )
    return table


def engines_table(processes: list[EngineProcess]) -> Table:
    table = _new_table(
        "Engines started", ("engine", "kind", "url", "pid", "cpus", "gpus", "cold start s", "log")
    )
    for p in processes:
        table.add_row(
            p.name,
            p.engine,
            p.url,
            str(p.pid),
            ",".join(map(str, p.cpus)) or "-",
            ",".join(map(str, p.gpu_devices)) or "-",
            f"{p.cold_start_s:.1f}" if p.cold_start_s is not None else "-",
            p.log,
        )
    return table


def status_table(rows: list[EngineStatus]) -> Table:
    table = _new_table(
        "Engines", ("engine", "kind", "url", "pid", "alive", "health", "cold start s")
    )
    for r in rows:
        p = r.process
        table.add_row(
            p.name,
            p.engine,
            p.url,
            str(p.pid),
            _yes_no(r.alive),
            str(r.health) if r.health is not None else "-",
            f"{p.cold_start_s:.1f}" if p.cold_start_s is not None else "-",
        )
    return table


def bench_table(document: BenchDocument) -> Table:
    config = document.config
    load = config["load"]
    mode = (
        f"concurrency {load['concurrency']}"
        if load["concurrency"]
        else f"{config['workload']['arrivals']['rate']:g} req/s "
        f"{config['workload']['arrivals']['kind']}"
    )
    title = f"bench: {config['requests']} requests, {mode}, {document.duration_s:.1f} s"
    table = _new_table(
        title,
        (
            "target",
            "ok",
            "errors",
            *LATENCY_COLUMNS,
            "req/s",
            "tok/s",
            "goodput",
            "sched. delay p99",
        ),
        left=("target",),
    )
    rows = list(document.models.items())
    if len(rows) > 1:
        rows.append(("all", document.all))
    for name, m in rows:
        table.add_row(
            name,
            str(m.completed),
            str(m.failed),
            f"{m.ttft_ms.p50:.1f}",
            f"{m.ttft_ms.p99:.1f}",
            f"{m.tpot_ms.p50:.2f}",
            f"{m.tpot_ms.p99:.2f}",
            f"{m.itl_ms.p99:.2f}",
            f"{m.e2e_ms.p99:.0f}",
            f"{m.throughput_rps:.2f}",
            f"{m.output_tokens_per_s:.0f}",
            f"{m.goodput_rps:.2f}",
            f"{m.schedule_delay_ms.p99:.2f}",
        )
    return table


def compare_table(results: list[PlacementResult], title: str) -> Table:
    table = _new_table(title, ("placement", "model", *COMPARED), left=("placement", "model"))
    values = compared_values

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    by_placement = {r.placement: r for r in results}
    for result in results:
        for model, m in result.models.items():
            table.add_row(result.placement, model, *[cell(v) for v in values(m)])
    if {"shared", "isolated"} <= set(by_placement):
        for model in by_placement["isolated"].models:
            shared = by_placement["shared"].models.get(model)
            if shared is None:
                continue
            pairs = zip(values(shared), values(by_placement["isolated"].models[model]), strict=True)
            table.add_row(
                "shared vs isolated", model, *[difference(a, b) for a, b in pairs], style="bold"
            )
    return table
