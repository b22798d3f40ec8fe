"""Offline comparison of runs, read from their run directories only (no W&B).

    python scripts/compare.py multirun/2024-05-01/12-00-00 runs/baseline out=report.html

`collect_runs` (from `samplernn.rundir`, re-exported here) reads each run directory
(config.yaml, summary.json, metrics.jsonl, checkpoints/, samples/); `markdown_table`
gives per-group tables (seeds of one preset/config aggregated as mean ± sample std);
`write_report` writes one self-contained HTML page (images inline) and copies the
audio it plays into `<out stem>_files/` beside it. Anything missing (a crashed run,
no samples yet) is shown as missing; it never stops the report.
"""

import argparse
import base64
import html
import json
import re
import shutil
import urllib.parse
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from .audio import AudioError, audio_info, read_audio
from .plots import curves_png, spectrogram_png, waveform_png
from .rundir import (  # re-exported: samplernn.report stays the public entry point
    MISSING, RUN_MARKERS, SEARCH_DEPTH, ReportError, Row, RunRecord, Sample, collect_runs, common_root,
    config_differences, find_run_dirs, flatten, group_rows, read_run,
)

__all__ = ["MISSING", "RUN_MARKERS", "SEARCH_DEPTH", "ReportError", "Row", "RunRecord", "Sample",
           "collect_runs", "common_root", "config_differences", "find_run_dirs", "flatten", "group_rows",
           "read_run", "SUMMARY_COLUMNS", "RUN_COLUMNS", "summary_cells", "run_cells", "markdown_table",
           "CSS", "render_html", "write_report", "run", "main"]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _fmt_stat(row: Row, attr: str, digits: int = 3) -> str:
    mean, std, n = row.stat(attr)
    if n == 0:
        return MISSING
    spread = f" ± {std:.{digits}f}" if std is not None and digits else ""  # no spread for throughput
    count = f"n={n}" if n == len(row.runs) else f"n={n} of {len(row.runs)}"
    return f"{_fmt(mean, digits)}{spread} ({count})"


def _fmt_params(row: Row) -> str:
    values = sorted({r.n_parameters for r in row.runs if r.n_parameters is not None})
    return " / ".join(f"{v:,}" for v in values) if values else MISSING


def _delta(row: Row, rows: list[Row]) -> str:
    best = min((m for m in (r.stat("test_nll_bits")[0] for r in rows) if m is not None), default=None)
    mean = row.stat("test_nll_bits")[0]
    if mean is None or best is None:
        return MISSING
    return "best" if mean == best else f"+{mean - best:.3f}"


SUMMARY_COLUMNS = ("preset", "tiers", "params", "seeds", "test NLL (bits)", "Δ test vs best",
                   "best valid NLL (bits)", "train samples/s", "gen samples/s", "wall time (s)")
RUN_COLUMNS = ("run", "preset", "tiers", "seed", "status", "step", "test NLL (bits)",
               "best valid NLL (bits)", "train samples/s", "gen samples/s", "samples", "directory")


def summary_cells(row: Row, rows: list[Row]) -> list[str]:
    preset = f"{row.preset} ({row.variant})" if row.variant else row.preset
    return [preset, _fmt(row.tiers), _fmt_params(row), _seeds(row), _fmt_stat(row, "test_nll_bits"),
            _delta(row, rows), _fmt_stat(row, "best_valid_nll_bits"), _fmt_stat(row, "train_samples_per_s", 0),
            _fmt_stat(row, "gen_samples_per_s", 0), _fmt_stat(row, "wall_time_s", 0)]


def _seeds(row: Row) -> str:
    """Distinct seeds (three runs of seed 1 and two of seed 2 are 2 seeds, 5 runs)."""
    seeds = len({r.seed for r in row.runs})
    return str(seeds) if seeds == len(row.runs) else f"{seeds} ({len(row.runs)} runs)"


def run_cells(r: RunRecord) -> list[str]:
    samples = f"{len(r.samples)} (latest step {r.samples[-1].step})" if r.samples else "none yet"
    return [r.label, r.preset, _fmt(r.tiers), MISSING if r.seed is None else str(r.seed),
            r.status, _fmt(r.step), _fmt(r.test_nll_bits), _fmt(r.best_valid_nll_bits),
            _fmt(r.train_samples_per_s, 0), _fmt(r.gen_samples_per_s, 0), samples, r.where]


def _md(header, rows) -> str:
    clean = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows])


def markdown_table(records: list[RunRecord]) -> str:
    """Per group: the seed-aggregated table (mean ± sample std, n) and the per-run table."""
    parts = []
    for group, rows in group_rows(records).items():
        runs = [r for row in rows for r in row.runs]
        parts += [f"## {group} ({len(runs)} runs under {common_root(runs)})", "",
                  _md(SUMMARY_COLUMNS, [summary_cells(row, rows) for row in rows]), "",
                  _md(RUN_COLUMNS, [run_cells(r) for r in runs]), ""]
    return "\n".join(parts)


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1320px;padding:0 16px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}
.meta,.note{color:#666} .problems{color:#a33;margin:4px 0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f2f2f2;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#e7f6e7;font-weight:600} td.diff{background:#fff3b0;font-weight:600} td.missing{color:#999}
.curves img{max-width:49%;height:auto} .runcard{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:12px 0}
.samples{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;width:410px}
figure img{width:100%;height:auto;display:block} audio{width:100%} figcaption{font-size:12px;color:#555}
code{font-size:12px}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{_data_uri(png)}" alt="{html.escape(alt)}">'


def _html_table(header, rows, cls: str, row_classes=None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        tr_class = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        tds = "".join(f'<td class="{"num" if re.match(r"^[+]?[0-9.,]+( |$)", c) else ""}">{html.escape(c)}</td>'
                      for c in row)
        body.append(f"<tr{tr_class}>{tds}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _curves_html(runs: list[RunRecord]) -> str:
    by_step = [(r.label, s, v) for r in runs for s, _, v in [r.series("valid/nll_bits")]]
    by_time = [(r.label, t, v) for r in runs for _, t, v in [r.series("valid/nll_bits")]]
    minutes = max((max(t) for _, t, _ in by_time if t), default=0) > 600
    if minutes:
        by_time = [(label, [x / 60 for x in t], v) for label, t, v in by_time]
    missing = [r.label for r, (_, s, _) in zip(runs, by_step) if not s]
    note = (f'<p class="note">No valid/nll_bits logged for: {html.escape(", ".join(missing))}.</p>'
            if missing else "")
    families = [r.preset for r in runs]
    return ('<div class="curves">'
            + _img(curves_png(by_step, "step", title="valid NLL against step", families=families),
                   "valid NLL against step")
            + _img(curves_png(by_time, "wall-clock time (min)" if minutes else "wall-clock time (s)",
                              title="valid NLL against wall-clock time", families=families),
                   "valid NLL against time")
            + "</div>" + note)


def _diff_html(runs: list[RunRecord]) -> str:
    diffs = config_differences(runs)
    if len(runs) < 2 or not diffs:
        text = "All run configs are identical." if len(runs) > 1 else "One run: nothing to compare."
        return f'<p class="note">{text}</p>'
    head = "<th>key</th>" + "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    body = []
    for key, values in diffs.items():
        texts = [v if v is MISSING else json.dumps(v, default=str) for v in values]
        common = Counter(texts).most_common(1)[0][0]
        cells = "".join(f'<td class="{"missing" if t is MISSING else "diff" if t != common else ""}">'
                        f"{html.escape(str(t))}</td>" for t in texts)
        body.append(f"<tr><td><code>{html.escape(key)}</code></td>{cells}</tr>")
    return (f'<p class="note">Only keys that differ; highlighted: values that differ from the most common one.</p>'
            f'<table class="configdiff"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _sample_html(sample: Sample, record: RunRecord, files_dir: Path, run_index: int) -> str:
    meta = ", ".join(f"{k}={sample.meta[k]}" for k in ("label", "temperature", "seed", "seconds")
                     if k in sample.meta)
    caption = f"step {sample.step}, sample {sample.index}" + (f" ({meta})" if meta else "")
    try:
        sample_rate = audio_info(sample.path)["sample_rate"]
        wav = read_audio(sample.path, sample_rate)
    except (AudioError, OSError, ValueError, RuntimeError) as err:  # a bad file must not stop the report
        return (f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                f'<p class="problems">{html.escape(str(err))}</p></figure>')
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.label).strip("_")
    target = files_dir / f"{run_index:02d}_{slug}" / f"step_{sample.step}_sample_{sample.index}.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample.path, target)
    src = urllib.parse.quote("/".join(target.relative_to(files_dir.parent).parts))
    return (f"<figure><figcaption>{html.escape(caption)}</figcaption>"
            + _img(waveform_png(wav, sample_rate), f"waveform of {caption}")
            + _img(spectrogram_png(wav, sample_rate), f"spectrogram of {caption}")
            + f'<audio controls preload="metadata" src="{html.escape(src)}"></audio></figure>')


def _run_card(record: RunRecord, files_dir: Path, run_index: int, samples_per_run: int) -> str:
    parts = [f'<div class="runcard" id="run-{run_index}"><h4>{html.escape(record.label)} '
             f'<span class="meta">— {html.escape(record.status)}, <code>{html.escape(record.where)}</code>, '
             f'checkpoints: {html.escape(", ".join(record.checkpoints) or "none")}</span></h4>']
    parts += [f'<p class="problems">{html.escape(p)}</p>' for p in record.problems]
    per_label = {k.split("/", 2)[2]: v for k, v in (record.summary.get("final") or {}).items()
                 if k.startswith("test/nll_bits/") and isinstance(v, (int, float))}
    if per_label:  # a conditioned run's test NLL per label
        parts.append('<p class="note">test NLL per label (bits): ' + html.escape(", ".join(
            f"{name} {value:.4f}" for name, value in per_label.items())) + "</p>")
    if not record.samples:
        parts.append('<p class="note">No samples yet.</p>')
    else:
        last_step = record.samples[-1].step
        shown = [s for s in record.samples if s.step == last_step][:samples_per_run]
        parts.append('<div class="samples">'
                     + "".join(_sample_html(s, record, files_dir, run_index) for s in shown) + "</div>")
    return "".join(parts) + "</div>"


def render_html(records: list[RunRecord], files_dir: Path, samples_per_run: int = 3,
                title: str = "SampleRNN run comparison") -> str:
    """The whole page; copies the sample WAVs it plays into `files_dir` as a side effect."""
    groups = group_rows(records)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
             f'<p class="meta">{len(records)} runs in {len(groups)} group(s) under '
             f"<code>{html.escape(str(common_root(records)))}</code>; generated {datetime.now():%Y-%m-%d %H:%M}. "
             "NLL in bits per audio sample; spread is the sample std over seeds.</p>"]
    run_index = 0
    for group, rows in groups.items():
        runs = [r for row in rows for r in row.runs]
        best = _delta_best_classes(rows)
        parts += [f"<section class='group'><h2>{html.escape(group)}</h2><h3>Summary over seeds</h3>",
                  _html_table(SUMMARY_COLUMNS, [summary_cells(row, rows) for row in rows], "summary", best),
                  '<p class="note">Lower NLL is better. Δ: a row\'s mean test NLL minus the best row\'s. '
                  "Throughput and wall time are means over seeds.</p>",
                  "<h3>Runs</h3>", _html_table(RUN_COLUMNS, [run_cells(r) for r in runs], "runs"),
                  "<h3>Learning curves</h3>", _curves_html(runs),
                  "<h3>Config differences</h3>", _diff_html(runs), "<h3>Samples</h3>"]
        for r in runs:
            parts.append(_run_card(r, files_dir, run_index, samples_per_run))
            run_index += 1
        parts.append("</section>")
    parts.append(_listening_html(records))
    return "".join(parts) + "</body></html>\n"


def _listening_html(records: list[RunRecord]) -> str:
    """The listening tests these runs took part in (<run dir>/listening/<test>.json, written
    by samplernn-listen results): the table and chart of each, once."""
    from .listen.results import chart_png, text
    tests = {}
    for record in records:
        for path in sorted((record.path / "listening").glob("*.json")):
            try:
                result = json.loads(path.read_text())
                tests.setdefault((result["test"], result["mode"]), result)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a damaged file: the report goes on without it
    if not tests:
        return ""
    parts = ["<section class='group'><h2>Listening tests</h2>"]
    for (name, mode), result in tests.items():
        try:
            parts += [f"<h3>{html.escape(name)} ({html.escape(mode)})</h3>",
                      _img(chart_png(result), f"listening test {name}"),
                      f"<pre>{html.escape(text(result))}</pre>"]
        except (KeyError, TypeError, ValueError):
            parts.append(f"<p class='note'>{html.escape(name)}: its results file is damaged</p>")
    return "".join(parts) + "</section>"


def _delta_best_classes(rows: list[Row]) -> list[str]:
    return ["best" if _delta(row, rows) == "best" else "" for row in rows]


def write_report(paths, out="report.html", samples_per_run: int = 3) -> Path:
    """Write the HTML report for the runs under `paths`; audio goes to `<out stem>_files/`."""
    return _write_page(collect_runs(paths), out, samples_per_run)


def _write_page(records: list[RunRecord], out, samples_per_run: int) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"out={out} should end in .html, e.g. out=report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    files_dir = out.parent / f"{out.stem}_files"
    page = render_html(records, files_dir, samples_per_run)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    return out


def run(argv=None) -> int:
    """Command line: print the Markdown tables, write the HTML report. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="compare.py", description=(
        "Compare SampleRNN runs from their run directories (no W&B needed)."))
    parser.add_argument("paths", nargs="+", help="run directories and/or Hydra multirun directories")
    parser.add_argument("--out", help="HTML file to write (default report.html); `out=FILE` works too")
    parser.add_argument("--samples-per-run", type=int, default=3, help="samples shown per run (default 3)")
    args = parser.parse_args(argv)
    paths = [p for p in args.paths if not (p.startswith("out=") and not Path(p).exists())]
    outs = [p[4:] for p in args.paths if p not in paths]
    if len(outs) > 1 or (outs and args.out):
        parser.error("give the output file once (out=FILE or --out FILE)")
    if not paths:
        parser.error("give at least one run directory or multirun directory")
    out = args.out or (outs[0] if outs else "report.html")
    try:
        records = collect_runs(paths)
        print(markdown_table(records))
        written = _write_page(records, out, args.samples_per_run)
    except ReportError as err:
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that is a file, a full disk, no permission
        where = f" ({err.filename})" if err.filename else ""
        print(f"compare.py: error: could not write {out}: {err.strerror or err}{where}; choose "
              "another out=", file=sys.stderr)
        return 2
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB) and its audio in "
          f"{written.parent / (written.stem + '_files')}/", file=sys.stderr)
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":  # python -m samplernn.report: the same as samplernn-compare
    main()
