"""The recommendation — the cheapest option that meets the SLO (fewer GPUs on a tie) — and why;
and when none does, what binds for each model."""

from __future__ import annotations

from modelyard.plan.cost import Option
from modelyard.plan.demand import FleetDemand


def recommend(options: list[Option]) -> tuple[Option | None, str]:
    feasible = [o for o in options if o.feasible]
    if not feasible:
        return None, "no option meets the SLO"
    ranked = sorted(feasible, key=lambda o: (o.monthly_usd, o.gpus, o.name))
    best = ranked[0]
    why = [
        f"{best.name} is the cheapest option that meets the SLO: {best.gpus} GPUs, "
        f"${best.monthly_usd:,.0f}/month"
    ]
    bound = set(best.sized_by)
    if bound == {"availability"}:
        why.append("replica minimums for availability, not traffic, set its size")
    elif {"SLO", "availability"} <= bound:
        why.append(
            "the SLO capacity at peak traffic sets its replica counts, where the availability "
            "minimums do not ask for more"
        )
    elif "SLO" in bound:
        why.append("the SLO capacity at peak traffic sets its replica counts")
    if "failover" in bound:
        why.append("fallbacks are sized to absorb their primary's traffic")
    written = next((o for o in options if o.kind == "as written"), None)
    if written is not None and written is not best:
        if written.feasible:
            why.append(f"the fleet as written also meets it at ${written.monthly_usd:,.0f}/month")
        else:
            why.append(f"the fleet as written does not ({written.verdict.blocked_by})")
    if len(ranked) > 1:
        runner_up = ranked[1]
        why.append(f"next: {runner_up.name} at ${runner_up.monthly_usd:,.0f}/month")
    return best, "; ".join(why)


def diagnose(options: list[Option], models: FleetDemand) -> list[str]:
    """Per model, what keeps it from meeting the SLO in the options considered: the reasons
    of the units holding it that were ruled out (the first of each kind of constraint)."""
    lines = []
    for model in models.planned:
        seen: dict[str, str] = {}
        served = False
        for option in options:
            for unit in option.units:
                if model not in unit.models:
                    continue
                if unit.verdict.feasible:
                    served = True
                elif unit.verdict.blocked_by not in seen:
                    seen[str(unit.verdict.blocked_by)] = unit.verdict.reason
        if seen:
            kinds = "; ".join(f"{kind}: {reason}" for kind, reason in seen.items())
            lines.append(f"{model} — {kinds}" + ("" if not served else " (served elsewhere)"))
        elif not served:
            lines.append(f"{model} — not placed by any option considered")
    return lines
