"""`iqs compare` output: CI cells, notes, rich/csv/markdown text, and the html/png figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqs.metrics.interval_rule import too_few_text
from iqs.report.compare_table import SUFFIX_HI, SUFFIX_LO, SUFFIX_N, SUFFIX_TOO_FEW
from iqs.report.model_card import md_table

WIDE = 1000  # rich tables do not expand, so this is only a ceiling


def _num(v: Any, digits: int) -> str:
    return "" if v is None or pd.isna(v) else f"{float(v):.{digits}f}"


def n_text(n_groups: Any) -> str:
    """` n=15` after an interval (the number of test groups it rests on); empty when unknown."""
    return "" if n_groups is None or pd.isna(n_groups) else f" n={int(n_groups)}"


def _ci_cell(v: Any, lo: Any, hi: Any, digits: int, n_groups: Any = None, too_few: bool = False) -> str:
    if v is None or pd.isna(v):
        return ""
    if too_few:
        return f"{float(v):.{digits}f}{n_text(n_groups)}: no CI"  # the note says why (too_few_notes)
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{float(v):.{digits}f}"
    return f"{float(v):.{digits}f} [{float(lo):.2f}, {float(hi):.2f}]{n_text(n_groups)}"


def _flag(v: Any) -> bool:
    """A boolean column's cell that may be missing (NaN on rows that carry a note instead)."""
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and bool(v)


def too_few_notes(n_groups: Any, too_few: Any) -> list[str]:
    """`n=3 groups: too few for an interval; use data.folds=k`, once per such group count."""
    pairs = zip(pd.Series(n_groups, dtype=float), pd.Series(too_few, dtype=bool), strict=True)
    return [too_few_text(int(n)) for n in sorted({n for n, few in pairs if few and pd.notna(n)})]


def display_frame(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    """What people read: CI columns folded into `0.794 [0.75, 0.83] n=15` cells, numbers rounded."""
    view = table.attrs.get("view")
    if view == "metric":
        extra = (SUFFIX_LO, SUFFIX_HI, SUFFIX_N, SUFFIX_TOO_FEW)
        shown = table.drop(columns=[c for c in table.columns if c.endswith(extra)])
        shown = shown.astype(object)
        for ds in table.attrs["datasets"]:
            shown[ds] = [
                _ci_cell(v, lo, hi, min(digits, 3), n, few)
                for v, lo, hi, n, few in zip(
                    table[ds],
                    table[f"{ds}{SUFFIX_LO}"],
                    table[f"{ds}{SUFFIX_HI}"],
                    table.get(f"{ds}{SUFFIX_N}", pd.Series(float("nan"), index=table.index)),
                    table.get(f"{ds}{SUFFIX_TOO_FEW}", pd.Series(False, index=table.index)),
                    strict=True,
                )
            ]
        return shown
    if view == "baseline":
        d = min(digits, 3)
        first = table["run_id"].ne(table["run_id"].shift())  # the run's name on its first row only
        shown = pd.DataFrame(
            {
                "run_id": table["run_id"].where(first, ""),
                "run": table["who"].where(first, ""),
                "dataset": table["dataset"],
            }
        )
        shown["baseline"] = [_num(v, d) for v in table.get("baseline", pd.Series(index=table.index))]
        shown["run value"] = [_num(v, d) for v in table.get("value", pd.Series(index=table.index))]
        cells, ps = [], []
        for _, r in table.iterrows():
            if r.get("note"):
                cells.append(str(r["note"]))
                ps.append("")
                continue
            if _flag(r.get("too_few_groups")):
                cells.append(f"{r['delta']:+.{d}f}{n_text(r.get('n_groups'))}: no CI")
                ps.append("")
                continue
            lo, hi = r["delta_lo"], r["delta_hi"]
            ci = "" if pd.isna(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
            cells.append(f"{r['delta']:+.{d}f}{ci}{n_text(r.get('n_groups'))}")
            p = r["p_value"]
            ps.append("" if pd.isna(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"))
        shown["delta [CI] n=groups"] = cells
        shown["p"] = ps
        return shown
    return _formatted(table, digits)


def notes_for(table: pd.DataFrame) -> list[str]:
    """The footnotes every format carries: what the CIs are and what is not comparable."""
    notes = []
    view = table.attrs.get("view")
    if view == "metric":
        notes.append(
            "value [95% CI] n=test groups: interval over the test split's photographs/groups, as each run "
            "logged it (method per metric and group count: iqs.metrics.interval_rule; see the run's "
            "metrics/test_ci.csv)"
        )
        for ds in table.attrs.get("datasets") or []:
            if f"{ds}{SUFFIX_TOO_FEW}" in table.columns:
                notes += too_few_notes(table[f"{ds}{SUFFIX_N}"], table[f"{ds}{SUFFIX_TOO_FEW}"])
    if view == "baseline":
        s = table.attrs.get("settings", {})
        method = s.get("method", "auto")
        notes.append(
            f"delta = run - baseline ({table.attrs['baseline']}) on the same test images; "
            f"[{int(float(s.get('confidence', 0.95)) * 100)}% CI] and two-sided p paired over the test "
            f"groups (method: {'per metric and group count, iqs.metrics.interval_rule' if method == 'auto' else method}"
            f"; {s.get('n_resamples')} resamples where it is a bootstrap)"
        )
        if "too_few_groups" in table.columns:
            notes += too_few_notes(table["n_groups"], table["too_few_groups"].map(_flag))
    hidden = table.attrs.get("hidden_params") or []
    if hidden:
        named = ", ".join(hidden[:4]) + (", ..." if len(hidden) > 4 else "")
        notes.append(
            f"{len(hidden)} more param(s) vary ({named}): `params=all` shows every one, `params=[a,b]` those"
        )
    notes = list(dict.fromkeys(notes))
    if table.attrs.get("label_groups", 1) > 1 and table.attrs.get("label_metrics"):
        notes.append(
            f"{', '.join(table.attrs['label_metrics'])}: depend on the label thresholds; compare them only "
            "within one `labels` group (PLCC/SRCC/KRCC/RMSE compare across groups)"
        )
    return notes


def _formatted(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    shown = table.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    return shown


def rich_table(table: pd.DataFrame, digits: int, title: str) -> Any:
    from rich import box
    from rich.table import Table

    shown = display_frame(table, digits)
    numeric = set(table.select_dtypes("number").columns) | set(table.attrs.get("datasets") or [])
    from rich.markup import escape

    caption = escape("\n".join(notes_for(table))) or None
    out = Table(
        title=escape(title),
        caption=caption,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        padding=(0, 0),  # the box's column separator is the one space between columns:
        show_edge=False,  # four datasets of `0.794 [0.75, 0.83]` cells fit in 100 columns
    )
    for col in shown.columns:
        out.add_column(str(col), justify="right" if col in numeric else "left")
    groups = table["labels"].tolist() if "labels" in table.columns else None
    if table.attrs.get("view") == "baseline":
        groups = table["run_id"].tolist()  # one block per run
    for i, row in enumerate(shown.itertuples(index=False)):
        if groups is not None and i > 0 and groups[i] != groups[i - 1]:
            out.add_section()
        out.add_row(*("" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in row))
    return out


def fit_width(table: pd.DataFrame, digits: int, title: str, width: int) -> pd.DataFrame:
    """The table without its least informative param columns until its rich rendering fits `width`
    columns (the axes, run ids and metric cells stay); those dropped are named in the notes."""
    from rich.console import Console

    console = Console(width=WIDE)
    shown = list(table.attrs.get("params") or [])
    while shown and console.measure(rich_table(table, digits, title)).maximum > width:
        dropped = shown.pop()
        attrs = {**table.attrs, "params": shown, "hidden_params": [dropped, *table.attrs["hidden_params"]]}
        table = table.drop(columns=[dropped])
        table.attrs.update(attrs)
    return table


def title_for(table: pd.DataFrame, cfg: Any, uri: str) -> str:
    view = table.attrs.get("view")
    scope = table.attrs.get("scope")
    if scope and view == "metric":
        return (
            f"{cfg.stage} {cfg.metric}, {scope}: {len(table)} run(s) in {uri}\n"
            "(other groups: sweep=<id>, cv=<id>, experiment=<name>; every run: runs=all)"
        )
    if view == "metric":
        return f"{cfg.stage} {cfg.metric}: {len(table)} run(s) in {uri}"
    if view == "baseline":
        return f"{cfg.stage} {cfg.metric}: runs vs baseline {table.attrs['baseline']}"
    return f"{len(table)} run(s) in {uri}"


def render(table: pd.DataFrame, fmt: str, digits: int, title: str, width: int = WIDE) -> str:
    """CSV (full precision, CI bounds in their own columns), markdown, or the rich table as text."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        notes = "".join(f"\n_{n}_\n" for n in notes_for(table))
        return md_table(display_frame(table, digits)) + "\n" + notes
    from rich.console import Console

    console = Console(record=True, width=width)
    with console.capture():
        console.print(rich_table(table, digits, title))
    return console.export_text()


def figure_for(table: pd.DataFrame, title: str) -> Any:
    """Per-dataset values (or differences) with their CI bars, one row per run."""
    from iqs.report.plots import ci_figure

    if table.attrs.get("view") == "baseline":
        ok = table[table.get("note", "").astype(str) == ""] if "note" in table.columns else table
        ok = ok.assign(run=ok["who"] + " (" + ok["run_id"] + ")")
        runs = list(dict.fromkeys(ok["run"]))
        datasets = table.attrs["datasets"]

        def grid(col: str) -> np.ndarray:
            if col not in ok.columns:  # every row a note (labels differ): nothing to draw
                return np.full((len(runs), len(datasets)), np.nan)
            values = ok.assign(**{col: ok[col].map(_flag) if col == "too_few_groups" else ok[col]})
            values[col] = values[col].astype(np.float64)
            piv = values.pivot_table(
                index="run", columns="dataset", values=col, aggfunc="first", dropna=False
            )
            return piv.reindex(index=runs, columns=datasets).to_numpy(np.float64)

        return ci_figure(
            runs, datasets, grid("delta"), grid("delta_lo"), grid("delta_hi"), title,
            f"{table.attrs['metric']}: run - baseline", zero_line=True,
            n_groups=grid("n_groups"), too_few=grid("too_few_groups") > 0,
        )  # fmt: skip
    datasets = table.attrs["datasets"]
    shown = display_frame(table, 3)
    who = [c for c in shown.columns if c not in datasets and c != "labels"]
    labels = [" ".join(str(v) for v in row) for row in table[who].itertuples(index=False)]
    values = table[datasets].to_numpy(np.float64)
    lows = table[[f"{d}{SUFFIX_LO}" for d in datasets]].to_numpy(np.float64)
    highs = table[[f"{d}{SUFFIX_HI}" for d in datasets]].to_numpy(np.float64)
    n_groups = np.column_stack(
        [
            table.get(f"{d}{SUFFIX_N}", pd.Series(np.nan, index=table.index)).to_numpy(np.float64)
            for d in datasets
        ]
    )
    too_few = np.column_stack(
        [
            table.get(f"{d}{SUFFIX_TOO_FEW}", pd.Series(False, index=table.index)).to_numpy(bool)
            for d in datasets
        ]
    )
    return ci_figure(
        labels,
        datasets,
        values,
        lows,
        highs,
        title,
        table.attrs["metric"],
        n_groups=n_groups,
        too_few=too_few,
    )


def write_figure(table: pd.DataFrame, fmt: str, title: str, path: Path, digits: int) -> None:
    """A PNG, or an HTML page with the plot, the table and its notes."""
    import base64
    import html
    import io

    fig = figure_for(table, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        path.write_bytes(buf.getvalue())
        return
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in notes_for(table))
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{img}">'
        f"{display_frame(table, digits).to_html(index=False, escape=True, na_rep='')}{notes}</body></html>\n"
    )
    path.write_text(page)
