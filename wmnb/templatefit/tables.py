"""Tables every template fit shows: group impacts next to a reference (the paper's), and the
rows of the cross-check fits.  The reference numbers are the chapter's (chapter 08 the paper's
m_W table, chapter 07 the W-like one)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fitting import TemplateFit, difference

#: groups shown last, in this order
_LAST = ("stat", "total")


def impact_table(nominal: Mapping[str, float] | None, global_: Mapping[str, float] | None,
                 reference: Mapping[str, tuple[float | None, float | None]] | None = None, label: str = "paper") -> str:
    """Markdown table of group impacts (nominal, global) next to ``reference`` (group ->
    (nominal, global)); groups missing on a side are shown as "–"."""
    nominal, global_, reference = nominal or {}, global_ or {}, reference or {}
    groups = sorted(set(nominal) | set(global_) | set(reference),
                    key=lambda g: (g in _LAST, _LAST.index(g) if g in _LAST else 0, g))

    def fmt(d: Mapping[str, Any], g: str, spec: str = ".2f") -> str:
        return format(d[g], spec) if g in d and d[g] is not None else "–"

    ref_nom = {g: v[0] for g, v in reference.items()}
    ref_glob = {g: v[1] for g, v in reference.items()}
    head = "| group | nominal | global |"
    rule = "|---|---|---|"
    if reference:
        head += f" {label} nominal | {label} global |"
        rule += "---|---|"
    lines = [head, rule]
    for g in groups:
        row = f"| {g} | {fmt(nominal, g)} | {fmt(global_, g)} |"
        if reference:
            row += f" {fmt(ref_nom, g, 'g')} | {fmt(ref_glob, g, 'g')} |"
        lines.append(row)
    return "\n".join(lines)


def cross_check_rows(results: Mapping[str, TemplateFit], nominal: TemplateFit, poi: str = "mass",
                     norm: str = "norm_w", poi_label: str | None = None, norm_label: str | None = None
                     ) -> list[dict[str, Any]]:
    """Rows (check, quantity, value, error) of cross-check fits: a split POI pair as its
    difference (with the fit's correlation), a floating normalisation as μ, anything else as
    the shift of ``poi`` against the nominal fit (blinding-safe: differences only).
    ``poi_label``/``norm_label`` name them in the table."""
    poi_label = poi_label or poi
    norm_label = norm_label or f"{norm} μ"
    rows = []
    for name, fit in results.items():
        pois = [p for p in fit.values if p.startswith(poi)]
        if len(pois) == 2:
            diff, err = difference(fit, pois[0], pois[1])
            rows.append({"check": name, "quantity": f"{pois[0]} − {pois[1]}", "value": diff, "error": err})
            continue
        if norm in fit.values:
            rows.append({"check": name, "quantity": norm_label, "value": fit.values[norm], "error": fit.errors[norm]})
        rows.append({"check": name, "quantity": f"{poi_label} shift vs nominal fit",
                     "value": fit.values[poi] - nominal.values[poi], "error": fit.errors[poi]})
    return rows
