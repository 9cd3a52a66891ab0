"""One self-contained HTML page describing a finished run folder (``popsed-jax report RUN``).

The page embeds every figure as a base64 PNG data URI and carries its CSS inline: no external
resources, no JavaScript, so it can be mailed or opened from anywhere. Sections: header (run,
catalog, date, steps, members, wall time), fit quality (validation divergence per member vs the
data-vs-data floor), configuration, loss curves, posterior-predictive checks, noise model,
population corner plot, science products (science.json + nz/smf/sfms figures) and evaluation
against a mock's truth (evaluation.json + corner_vs_truth.png) when present.

Only config.json and summary.json are required; every other file is optional and, when missing
or unreadable, is listed in a "not available" note instead of breaking the page.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path

from ..inference.config import FLAG_RATIO, config_groups, config_help
from .runfolder import FILES, RunFolder

__all__ = ["write_report", "build_report_html", "FLAG_RATIO"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TABLE_ROWS = 40  # long columns in science.json are shown head + tail
MAX_DEPTH = 5
SHORT_LIST = 8  # lists of at most this many scalars are shown inline
BAR_PX = 160  # width of the normalized-W1 bar scale 0..2 (1 = prior at the middle)

# figure name -> (section id, caption)
CORE_FIGURES = {
    FILES["loss_plot"]: "Training divergence per member with the blur (epsilon) and noise annealing schedules (left); "
    "held-out validation divergence with the data-vs-data floor (right).",
    FILES["ppc_plot"]: "Posterior predictive check: observed magnitudes and adjacent colours (black) vs photometry simulated "
    "from the fitted population with the noise model and survey selection applied (orange).",
    FILES["noise_plot"]: "Noise model per band: catalog flux uncertainty vs flux, with the model median and 16-84% band.",
    FILES["corner"]: "The fitted population (samples that pass the survey selection): redshift, formed stellar mass, "
    "metallicity, diffuse dust, log SFR (100 Myr) and mass-weighted age.",
}
SCIENCE_FIGURES = {
    FILES["nz_plot"]: "Redshift distribution n(z) of the selected population vs the catalog's spectroscopic redshifts (never seen by the fit).",
    FILES["smf_plot"]: "Stellar mass function: 1/Vmax (forward-modelled z_max) and the population's intrinsic one, with Baldry et al. (2012).",
    FILES["sfms_plot"]: "Star-forming main sequence (SFR vs stellar mass) at z < 0.1, with Speagle et al. (2014) and Renzini & Peng (2015).",
    FILES["masses_plot"]: "Stellar masses of the population vs kcorrect template fits of the same galaxies at their spec-z "
    "(BC03 + Chabrier, Planck15, stars + remnants): whole sample and redshift slices.",
}
EVAL_FIGURES = {
    FILES["corner_truth"]: "Recovered population (blue) vs the mock's true parameters (black), selected galaxies only.",
}

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px}
header{background:#1f3b5a;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:1.55em}
header .sub{opacity:.85;font-size:.92em}
h2{border-bottom:2px solid #1f3b5a;padding-bottom:3px;margin-top:34px;font-size:1.25em}
h3{font-size:1.05em;margin:18px 0 6px}
h4{font-size:.97em;margin:14px 0 4px;color:#34465e}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:.9em}
th,td{border:1px solid #d4d9e1;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#e8edf4}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
td.help{color:#5b6678;font-size:.92em}
tr.flagged td{background:#fde2e1}
.good{background:#dff3e2!important}.warn{background:#fff2cc!important}.bad{background:#fde2e1!important}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:.9em}
.badge.ok{background:#2e7d32;color:#fff}.badge.alert{background:#c62828;color:#fff}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;margin:10px 0;font-size:.92em}
.muted{color:#6b7687;font-size:.9em}
figure{margin:10px 0 18px;background:#fff;border:1px solid #d4d9e1;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.88em;color:#4a5568;margin-top:6px}
nav{font-size:.9em;margin:8px 0}
nav a{margin-right:12px;color:#1f3b5a}
pre{background:#fff;border:1px solid #d4d9e1;padding:8px;overflow-x:auto;font-size:.85em}
.bar{display:inline-block;height:9px;background:#5c7fa8;vertical-align:middle}
td.scale{width:176px;background:linear-gradient(to right,transparent 88px,#9aa5b4 88px,#9aa5b4 89px,transparent 89px)}
.groups{display:flex;flex-wrap:wrap;gap:0 26px}
.groups>div{flex:1 1 460px}
"""


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_scalar_list(v) -> bool:
    return isinstance(v, list) and all(_is_scalar(x) for x in v)


def _is_flat(v) -> bool:
    """A value shown in one table cell: a scalar, or a short list of scalars (or of strings)."""
    return _is_scalar(v) or (_is_scalar_list(v) and (len(v) <= SHORT_LIST or all(isinstance(x, str) for x in v)))


def _is_record(v) -> bool:
    """A dict that reads as one table row: scalars and lists of scalars (long lists are abbreviated)."""
    return isinstance(v, dict) and bool(v) and all(_is_scalar(x) or _is_scalar_list(x) for x in v.values())


def _fmt(v, spec: str = ".4g") -> str:
    """Text of one JSON value (numbers with `spec`), already HTML-escaped."""
    if v is None:
        return "&mdash;"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return _e(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return _e(v)
        return _e(format(v, spec))
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) and v:
        return "<br>".join(_e(x) for x in v)
    if isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v):
        if len(v) > 2 * SHORT_LIST:
            return f"[{len(v)} values: " + ", ".join(_fmt(x, spec) for x in v[:3]) + ", &hellip;, " + _fmt(v[-1], spec) + "]"
        return "[" + ", ".join(_fmt(x, spec) for x in v) + "]"
    if isinstance(v, str):
        return _e(v)
    return _e(json.dumps(v))


def _num_class(v) -> str:
    return ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _kv_table(items, head=("key", "value")) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td{_num_class(v)}>{_fmt(v)}</td></tr>" for k, v in items)
    top = f"<tr><th>{_e(head[0])}</th><th>{_e(head[1])}</th></tr>" if head else ""
    return f"<table>{top}{rows}</table>"


def _figure(path: Path, caption: str, missing: list, bad: list) -> str:
    """<figure> with the PNG at `path` embedded as a data URI ('' if absent or not a PNG)."""
    if not path.is_file():
        missing.append(path.name)
        return ""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        bad.append(f"{path.name} (not a PNG file)")
        return ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{_e(path.name)}">'
            f"<figcaption><b>{_e(path.name)}</b> &mdash; {_e(caption)}</figcaption></figure>")


def _read_json(path: Path, required: bool, missing: list, bad: list):
    """Parsed JSON of `path`; for optional files None (noted in `missing`/`bad`) when absent or broken."""
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path.parent} is not a popsed-jax run folder: missing {path.name} ({path})")
        missing.append(path.name)
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if required:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        bad.append(f"{path.name} (invalid JSON: {exc})")
        return None


def _duration(sec) -> str:
    if not isinstance(sec, (int, float)) or isinstance(sec, bool) or not math.isfinite(sec):
        return "not recorded"
    h, rem = divmod(int(round(sec)), 3600)
    m, s = divmod(rem, 60)
    hms = f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"
    return f"{sec:.1f} s ({hms})"


def _mtime(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------------------
# generic rendering of JSON products (science.json, extra evaluation keys)
# ----------------------------------------------------------------------------------------
_MED_KEYS = ("median", "p50", "q50", "50")
_PCT_KEYS = (("p16", "p84"), ("q16", "q84"), ("16", "84"), ("lo", "hi"), ("low", "high"))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _median_interval(row: dict) -> tuple[str, tuple] | None:
    """'median [p16, p84]' of a record holding a median and a 16-84% range, and the keys it used."""
    mk = next((k for k in _MED_KEYS if k in row), None)
    if mk is None or not _is_number(row[mk]):
        return None
    for lo_k, hi_k in _PCT_KEYS:
        lo, hi = row.get(lo_k), row.get(hi_k)
        if _is_number(lo) and _is_number(hi):
            return f"{_fmt(row[mk])} [{_fmt(lo)}, {_fmt(hi)}]", (mk, lo_k, hi_k)
    for k in ("interval", "p16_p84", "range_16_84", "ci68"):
        v = row.get(k)
        if isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v):
            return f"{_fmt(row[mk])} [{_fmt(v[0])}, {_fmt(v[1])}]", (mk, k)
    return None


def _records_table(rows: list[tuple[str, dict]], first="name") -> str:
    """One row per record, one column per key; a 'median [16%, 84%]' column when the records have one."""
    cols: list[str] = []
    for _, r in rows:
        cols += [c for c in r if c not in cols]
    summ = [_median_interval(r) for _, r in rows]
    show_summ = any(s is not None for s in summ)
    if show_summ and all(s is not None for s in summ):  # the combined column replaces its parts
        used = {k for s in summ for k in s[1]}
        cols = [c for c in cols if c not in used]
    head = f"<th>{_e(first)}</th>" + ("<th>median [16%, 84%]</th>" if show_summ else "") + "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = ""
    for (name, r), s in zip(rows, summ):
        cells = "".join(f"<td{_num_class(r.get(c))}>{_fmt(r[c]) if c in r else ''}</td>" for c in cols)
        body += f"<tr><th>{_e(name)}</th>" + (f'<td class="num">{s[0] if s else ""}</td>' if show_summ else "") + cells + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _column_table(cols: dict[str, list]) -> str:
    """Equal-length lists side by side (head and tail rows when longer than MAX_TABLE_ROWS)."""
    n = len(next(iter(cols.values())))
    idx = list(range(n)) if n <= MAX_TABLE_ROWS else list(range(MAX_TABLE_ROWS - 8)) + [None] + list(range(n - 7, n))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = ""
    for i in idx:
        if i is None:
            body += f'<tr><td colspan="{len(cols)}" class="muted">&hellip; {n - MAX_TABLE_ROWS + 1} rows not shown &hellip;</td></tr>'
            continue
        body += "<tr>" + "".join(f"<td{_num_class(v[i])}>{_fmt(v[i])}</td>" for v in cols.values()) + "</tr>"
    note = f'<div class="muted">{n} rows' + ("; full values in the JSON file" if n > MAX_TABLE_ROWS else "") + "</div>"
    return f"<table><tr>{head}</tr>{body}</table>{note}"


def _list_cell(v: list) -> str:
    """A whole list of scalars in one cell (abbreviated beyond MAX_TABLE_ROWS values)."""
    if len(v) <= MAX_TABLE_ROWS:
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return _fmt(v)


def _render_json(obj, depth: int = 0) -> str:
    """Whatever JSON `obj` holds, as headings and tables (tolerant of any structure).

    In a dict: scalars and short lists -> a key/value table; equal-length lists (and lists of
    per-member lists, as key[i]) -> side-by-side column tables; two or more dicts with the same
    keys -> one table with a row each (and a median [16%, 84%] column when they hold one);
    anything else -> a sub-heading and the same rules one level down."""
    if depth > MAX_DEPTH:
        text = json.dumps(obj, indent=1)
        return f"<pre>{_e(text[:4000])}{' ...' if len(text) > 4000 else ''}</pre>"
    if _is_scalar(obj):
        return f"<p>{_fmt(obj)}</p>"
    if isinstance(obj, list):
        if all(_is_scalar(x) for x in obj):
            return _column_table({"value": obj}) if len(obj) > SHORT_LIST else f"<p>{_fmt(obj)}</p>"
        if all(_is_record(x) for x in obj):
            return _records_table([(str(i), x) for i, x in enumerate(obj)], first="#")
        if obj and all(_is_scalar_list(x) and len(x) == len(obj[0]) for x in obj):
            return _column_table({f"[{i}]": x for i, x in enumerate(obj)})
        return "".join(f"<h4>[{i}]</h4>" + _render_json(x, depth + 1) for i, x in enumerate(obj))
    if not isinstance(obj, dict):  # pragma: no cover - JSON has no other types
        return f"<pre>{_e(obj)}</pre>"
    out = []
    flat = [(k, v) for k, v in obj.items() if _is_flat(v)]
    rest = [(k, v) for k, v in obj.items() if not _is_flat(v)]
    # lists of scalars, and lists of equal-length scalar lists (e.g. per member) -> columns by length
    cols: dict[str, list] = {}
    done = set()
    for k, v in rest:
        if _is_scalar_list(v):
            cols[str(k)] = v
            done.add(k)
        elif isinstance(v, list) and v and all(_is_scalar_list(x) and len(x) == len(v[0]) for x in v):
            cols.update({f"{k}[{i}]": x for i, x in enumerate(v)})
            done.add(k)
    by_len: dict[int, dict] = {}
    for k, v in cols.items():
        by_len.setdefault(len(v), {})[k] = v
    groups = []
    for group in by_len.values():
        if len(group) == 1:  # a lone list (e.g. bin edges): one row of the key/value table
            (k, v), = group.items()
            flat.append((k, v))
        else:
            groups.append(group)
    if flat:
        rows = "".join(f"<tr><th>{_e(k)}</th><td{_num_class(v)}>{_list_cell(v) if _is_scalar_list(v) and not all(isinstance(x, str) for x in v) else _fmt(v)}</td></tr>"
                       for k, v in flat)
        out.append(f"<table><tr><th>quantity</th><th>value</th></tr>{rows}</table>")
    out += [_column_table(g) for g in groups]
    # dicts of scalars sharing their keys -> one table, a row per quantity ("_meta"-style keys apart)
    by_keys: dict[frozenset, list] = {}
    for k, v in rest:
        if k not in done and _is_record(v) and not str(k).startswith("_"):
            by_keys.setdefault(frozenset(v), []).append((k, v))
    for recs in by_keys.values():
        if len(recs) >= 2:
            out.append(_records_table(recs, first="quantity"))
            done |= {k for k, _ in recs}
    for k, v in rest:
        if k in done:
            continue
        h = min(4, 3 + depth)
        out.append(f"<h{h}>{_e(k)}</h{h}>" + _render_json(v, depth + 1))
    return "".join(out) or '<p class="muted">(empty)</p>'


# ----------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------
def _section_fit_quality(summary: dict, val_loss: str | None = None) -> str:
    val = summary.get("val_divergence")
    floor = summary.get("data_floor")
    ratio = summary.get("val_over_floor")
    val = list(val) if isinstance(val, list) else ([] if val is None else [val])
    if not isinstance(ratio, list):
        ratio = [ratio] if ratio is not None else []
    if not ratio and val and isinstance(floor, (int, float)) and floor > 0:
        ratio = [v / floor if isinstance(v, (int, float)) else None for v in val]
    n = max(len(val), len(ratio))
    flagged = {int(m) for m in (summary.get("flagged_members") or []) if isinstance(m, (int, float))}
    for m, r in enumerate(ratio):
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) or r > FLAG_RATIO:
            flagged.add(m)
    if n == 0:
        return '<p class="note">summary.json records no validation divergences.</p>'
    badge = (f'<span class="badge alert">{len(flagged)} of {n} member(s) flagged</span>' if flagged
             else f'<span class="badge ok">all {n} member(s) within {FLAG_RATIO:g}&times; the data floor</span>')
    rows = ""
    for m in range(n):
        v = val[m] if m < len(val) else None
        r = ratio[m] if m < len(ratio) else None
        finite = isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
        cls = "good" if finite and r <= 1.5 else "warn" if finite and r <= FLAG_RATIO else "bad"
        status = "<b>FLAGGED</b>" if m in flagged else "ok"
        tr = '<tr class="flagged">' if m in flagged else "<tr>"
        rows += (f'{tr}<td class="num">{m}</td><td class="num">{_fmt(v)}</td>'
                 f'<td class="num">{_fmt(floor)}</td><td class="num {cls}">{_fmt(r, ".2f")}</td><td>{status}</td></tr>')
    eps = summary.get("epsilon_final")
    extra = f" at the final blur epsilon = {_fmt(eps)}" if eps is not None else ""
    return (
        f"<p>{badge}</p>"
        "<table><tr><th>member</th><th>validation divergence</th><th>data floor</th><th>val / floor</th><th>status</th></tr>"
        f"{rows}</table>"
        f'<p class="muted">Validation divergence: {_e(val_loss or "validation")} divergence between the held-out catalog '
        f"photometry and photometry simulated from each member (real noise model and selection applied){extra}. The data "
        f"floor is the same divergence between a training subsample and the held-out split of the real catalog, i.e. "
        f"roughly what a perfect model would score; val/floor near 1 is as good as "
        f"the data allow. Members with val/floor &gt; {FLAG_RATIO:g} or a non-finite divergence are flagged and should not be "
        f"trusted (green &le; 1.5, amber &le; {FLAG_RATIO:g}, red above).</p>"
    )


def _section_config(cfg: dict) -> str:
    used = set()
    blocks = []
    for title, keys in config_groups():
        items = [(k, cfg[k]) for k in keys if k in cfg]
        used |= {k for k, _ in items}
        if items:
            blocks.append((title, items))
    other = [(k, v) for k, v in cfg.items() if k not in used]
    if other:
        blocks.append(("Other", other))
    html_blocks = []
    for title, items in blocks:
        rows = ""
        for k, v in items:
            if k == "blur" and isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 for p in v):
                val = ", ".join(f"{_fmt(a, '.2f')}: {_fmt(b)}" for a, b in v)
            else:
                val = _fmt(v)
            rows += f"<tr><th>{_e(k)}</th><td{_num_class(v)}>{val}</td><td class='help'>{_e(config_help().get(k, ''))}</td></tr>"
        html_blocks.append(f"<div><h3>{_e(title)}</h3><table>{rows}</table></div>")
    return f'<div class="groups">{"".join(html_blocks)}</div>'


def _section_evaluation(ev: dict) -> str:
    out = []
    scores = ev.get("normalized_w1") if isinstance(ev, dict) else None
    if isinstance(scores, dict) and scores:
        rows = ""
        for q, v in scores.items():
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            cls = "good" if ok and v < 0.5 else "warn" if ok and v < 1.0 else "bad"
            width = int(BAR_PX * min(v, 2.0) / 2.0) if ok and v > 0 else 0
            more = " &#9656;" if ok and v > 2.0 else ""
            rows += (f'<tr><th>{_e(q)}</th><td class="num {cls}">{_fmt(v, ".3f")}</td>'
                     f'<td class="scale"><span class="bar" style="width:{width}px"></span>{more}</td></tr>')
        out.append(
            "<table><tr><th>quantity</th><th>normalized W1</th><th>0 &hellip; 1 (prior) &hellip; 2</th></tr>" + rows + "</table>"
            '<p class="muted">Normalized W1 = W1(recovered, truth) / W1(prior, truth), per quantity, comparing observed '
            "(selected) populations: 0 is a perfect recovery, 1 is no better than the uniform prior box "
            "(green &lt; 0.5, amber &lt; 1, red &ge; 1).</p>")
    rest = {k: v for k, v in ev.items() if k != "normalized_w1"} if isinstance(ev, dict) else ev
    if rest:
        out.append(_render_json(rest))
    return "".join(out)


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------
def build_report_html(run) -> str:
    """The report page of run folder `run` as an HTML string (see write_report)."""
    folder = RunFolder(run)
    run = folder.path
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist (expected config.json and summary.json in it)")
    missing: list[str] = []
    bad: list[str] = []
    cfg = _read_json(folder["config"], True, missing, bad)
    summary = _read_json(folder["summary"], True, missing, bad)
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder['config']} does not hold a JSON object")
    if not isinstance(summary, dict):
        raise ValueError(f"{folder['summary']} does not hold a JSON object")
    info = _read_json(folder["run_info"], False, missing, bad) or {}
    if not isinstance(info, dict):
        bad.append("run_info.json (not a JSON object)")
        info = {}
    science = _read_json(folder["science"], False, missing, bad)
    evaluation = _read_json(folder["evaluation"], False, missing, bad)

    sections: list[tuple[str, str, str]] = []  # (id, title, body)

    # header facts
    bands = info.get("bands")
    short_bands = " ".join(str(b).split("-")[-1] for b in bands) if isinstance(bands, list) else None
    facts = [
        ("run folder", str(run.resolve())),
        ("catalog", info.get("catalog", "unknown (no run_info.json)")),
        ("galaxies in catalog", info.get("n_catalog")),
        ("bands", short_bands),
        ("survey limit", cfg.get("limit")),
        ("run finished", _mtime(folder["summary"])),
        ("steps", summary.get("steps", cfg.get("steps"))),
        ("ensemble members", summary.get("members", cfg.get("members"))),
        ("wall time", _duration(summary.get("seconds"))),
        ("devices", summary.get("devices")),
        ("sharded", summary.get("sharded")),
    ]
    facts = [(k, v) for k, v in facts if v is not None]
    sections.append(("run", "Run", _kv_table(facts, head=None)))
    sections.append(("quality", "Fit quality", _section_fit_quality(summary, cfg.get("val_loss"))))
    sections.append(("config", "Configuration (config.json)", _section_config(cfg)))

    for fig, (sid, title) in zip(CORE_FIGURES, (("loss", "Loss curves"), ("ppc", "Posterior predictive checks"),
                                                  ("noise", "Noise model"), ("population", "The population"))):
        body = _figure(run / fig, CORE_FIGURES[fig], missing, bad)
        if body:
            sections.append((sid, title, body))

    sci_body = "".join(_figure(run / f, c, missing, bad) for f, c in SCIENCE_FIGURES.items())
    if science is not None:
        sci_body += '<p class="muted">The numbers in science.json (medians with 16&ndash;84% ranges where given):</p>' + _render_json(science)
    if sci_body:
        sections.append(("science", "Science products", sci_body))

    post_body = ""
    for key, label in (("photoz", "population prior"), ("photoz_plain", "plain prior")):
        pz_file = run / (FILES["photoz"] if key == "photoz" else FILES["photoz"].replace(".json", "_plain.json"))
        if pz_file.exists():
            m = _read_json(pz_file, False, missing, bad) or {}
            gal = FILES["galaxies"] if key == "photoz" else FILES["galaxies"].replace(".fits", "_plain.fits")
            rows = [(k, m.get(k)) for k in ("n", "nmad", "bias", "outlier_fraction", "pit_ks", "pit_max_departure",
                                            "frac_flagged", "frac_refined", "median_ess") if k in m]
            post_body += (f"<h3>{_e(label)}</h3><p>Per-galaxy table: <a href=\"{_e(gal)}\">{_e(gal)}</a> (medians, 16&ndash;84%, "
                          "MAP of z, mass, SFR, sSFR, age, Z, dust; p(z); ESS; flags)</p>" + _kv_table(rows))
            png = pz_file.with_suffix(".png")
            post_body += _figure(png, f"Photo-z (posterior median) vs spec-z and the PIT histogram, {label}.", missing, bad)
    if post_body:
        sections.append(("posteriors", "Per-galaxy posteriors", post_body))

    ev_body = ""
    if evaluation is not None:
        ev_body += _section_evaluation(evaluation)
    ev_body += "".join(_figure(run / f, c, missing, bad) for f, c in EVAL_FIGURES.items())
    if ev_body:
        sections.append(("evaluation", "Evaluation against the mock's truth", ev_body))

    known = set(CORE_FIGURES) | set(SCIENCE_FIGURES) | set(EVAL_FIGURES) | {FILES["photoz_plot"], "photoz_plain.png"}
    extra = sorted(p for p in run.glob("*.png") if p.name not in known)
    extra_body = "".join(_figure(p, "additional figure found in the run folder", [], bad) for p in extra)
    if extra_body:
        sections.append(("other", "Other figures", extra_body))

    notes = ""
    if missing:
        notes += ('<div class="note"><b>Not available</b> (not in the run folder): '
                  + ", ".join(_e(m) for m in missing) + "</div>")
    if bad:
        notes += ('<div class="note"><b>Could not be read</b>: ' + "; ".join(_e(b) for b in bad) + "</div>")

    nav = "<nav>" + "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t, _ in sections) + "</nav>"
    body = "".join(f'<section id="{sid}"><h2>{_e(t)}</h2>{b}</section>' for sid, t, b in sections)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"popsed-jax run report: {run.resolve().name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class=\"sub\">catalog {_e(info.get('catalog', 'unknown'))} &middot; "
        f"{_fmt(summary.get('steps', cfg.get('steps')))} steps &middot; {_fmt(summary.get('members', cfg.get('members')))} member(s) "
        f"&middot; report generated {_e(now)}</div></header>"
        f"<main>{nav}{notes}{body}</main></body></html>\n"
    )


def write_report(run, out=None) -> Path:
    """Write the self-contained HTML report of run folder `run` to `out` (default RUN/report.html).

    Figures are embedded as base64 PNG data URIs; no external resources or JavaScript.
    Raises FileNotFoundError (naming the file) when `run` lacks config.json or summary.json.
    Returns the path written.
    """
    text = build_report_html(run)
    out = Path(out) if out is not None else RunFolder(run)["report"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
