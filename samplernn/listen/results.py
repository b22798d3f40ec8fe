"""A listening test's results, from its database: A/B preference per pair of conditions
(counts, percentage with a 95% Wilson interval, exact binomial p-value) or MUSHRA mean scores
with 95% intervals after post-screening; as text, as JSON, as a bar chart (results.png), and
back beside the runs that took part (<run dir>/listening/<test>.json, which the compare
report shows), and to W&B in the runs' group.
"""

import json
from pathlib import Path

import yaml

from ..errors import NotFound
from . import stats
from .store import Store


def compute(test_dir: Path) -> dict:
    """-> {test, mode, conditions, raters, answers, pairs | mushra}; the JSON's fields."""
    test_dir = Path(test_dir)
    if not (test_dir / "listen.db").is_file():
        raise NotFound(f"{test_dir} is not a listening test (no listen.db); build one with "
                       "samplernn-listen build conditions=[...] test=<dir>")
    store = Store(test_dir / "listen.db")
    meta = store.meta()
    conditions = store.conditions()
    answers = store.answers()
    runs = meta.get("runs", {})
    out = {"test": test_dir.resolve().name, "mode": meta["mode"],
           "raters": len({a["rater"] for a in answers}), "answers": len(answers),
           "runs": runs, "group": _group(runs.values())}
    if meta["mode"] == "ab":
        names = [c["name"] for c in conditions]
        out["conditions"] = names
        out["pairs"] = stats.pairs([(a["conditions"][0], a["conditions"][1], a["choice"])
                                    for a in answers], names)
    else:
        scored = [c["name"] for c in conditions if c["role"] != "reference"]
        out["conditions"] = scored
        rows = [(a["rater"], c, s) for a in answers for c, s in a["scores"].items()]
        out["mushra"] = stats.mushra(rows, scored, "hidden_reference")
    return out


def _group(run_dirs) -> str | None:
    """The W&B group of the runs that took part (the first whose summary.json, or else
    config.yaml, names one)."""
    for run_dir in run_dirs:
        for name, read in (("summary.json", json.loads), ("config.yaml", yaml.safe_load)):
            path = Path(run_dir) / name
            try:
                group = (read(path.read_text()) or {}).get("group") if path.is_file() else None
            except (ValueError, yaml.YAMLError):
                group = None
            if group:
                return str(group)
    return None


def _pct(x) -> str:
    return "   -" if x is None else f"{100 * x:4.0f}"


def text(result: dict) -> str:
    lines = [f"listening test {result['test']} ({result['mode']}): {result['answers']} answers "
             f"from {result['raters']} raters"]
    if result["mode"] == "ab":
        width = max(len(c) for c in result["conditions"])
        lines.append(f"{'A':>{width}} vs {'B':<{width}}    n  A wins  B wins  ties  pref A %  "
                     "95% CI      p")
        for p in result["pairs"]:
            ci = "    -" if p["ci_low"] is None else \
                f"{_pct(p['ci_low'])}-{_pct(p['ci_high']).strip()}"
            lines.append(f"{p['a']:>{width}} vs {p['b']:<{width}} {p['n']:4d} {p['a_wins']:7d} "
                         f"{p['b_wins']:7d} {p['ties']:5d}  {_pct(p['pref_a']):>8}  {ci:>9}  "
                         f"{p['p_value']:.3g}")
        lines.append("pref A: share of decided trials (ties aside) preferring A; 95% CI: "
                     "Wilson; p: two-sided exact binomial test against 50%")
    else:
        m = result["mushra"]
        width = max(len(c) for c in result["conditions"])
        lines.append(f"{'condition':<{width}}    n   mean  95% CI")
        for r in m["conditions"]:
            if r["n"]:
                lines.append(f"{r['condition']:<{width}} {r['n']:4d} {r['mean']:6.1f}  "
                             f"{r['ci_low']:.1f}-{r['ci_high']:.1f}")
            else:
                lines.append(f"{r['condition']:<{width}}    0      -")
        if m["excluded"]:
            lines.append(f"excluded by post-screening (hidden reference below "
                         f"{stats.REFERENCE_FLOOR:.0f} in more than "
                         f"{100 * stats.REFERENCE_SHARE:.0f}% of trials): " + ", ".join(
                             f"rater {r} ({100 * s:.0f}%)" for r, s in m["excluded"].items()))
        else:
            lines.append("post-screening excluded no rater")
    return "\n".join(lines)


def chart_png(result: dict) -> bytes:
    """The paper's kind of figure: per pair, the share preferring each side with its 95%
    interval (A/B); mean score per condition with its interval (MUSHRA)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if result["mode"] == "ab":
        rows = result["pairs"]
        fig, ax = plt.subplots(figsize=(7, 1.4 + 0.55 * len(rows)))
        for y, p in enumerate(rows):
            share = p["pref_a"] if p["pref_a"] is not None else 0.5
            ax.barh(y, 100 * share, color="#4c72b0")
            ax.barh(y, 100 * (1 - share), left=100 * share, color="#dd8452")
            if p["ci_low"] is not None:
                ax.errorbar(100 * share, y, xerr=[[100 * (share - p["ci_low"])],
                                                  [100 * (p["ci_high"] - share)]],
                            color="k", capsize=4, lw=1.2, zorder=2)
            other = None if p["pref_a"] is None else 1 - p["pref_a"]
            for x, ha, color, words in ((1, "left", "#4c72b0", _pct(p["pref_a"])),
                                        (99, "right", "#dd8452", _pct(other))):
                ax.text(x, y, f"{words.strip()}%", va="center", ha=ha, color="w", zorder=3,
                        bbox={"facecolor": color, "edgecolor": "none", "pad": 1})
        ax.axvline(50, color="k", lw=0.8, ls="--")
        ax.invert_yaxis()
        ax.set_yticks(range(len(rows)), [f"{p['a']} vs {p['b']}\n(n={p['n']})" for p in rows])
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of decided trials preferring A (blue) or B (orange); 95% Wilson "
                      "interval")
    else:
        rows = [r for r in result["mushra"]["conditions"] if r["n"]]
        fig, ax = plt.subplots(figsize=(7, 1.4 + 0.55 * len(rows)))
        for y, r in enumerate(rows):
            ax.barh(y, r["mean"], color="#4c72b0",
                    xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], capsize=4)
        ax.set_yticks(range(len(rows)), [r["condition"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("MUSHRA score, mean and 95% interval")
    ax.set_title(f"{result['test']}: {result['answers']} answers, {result['raters']} raters")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write(test_dir: Path, result: dict) -> list[Path]:
    """results.json and results.png in the test directory, and the JSON beside each run
    that took part -> the paths written."""
    test_dir = Path(test_dir)
    body = json.dumps(result, indent=2)
    written = [_atomic(test_dir / "results.json", body.encode()),
               _atomic(test_dir / "results.png", chart_png(result))]
    for run_dir in result.get("runs", {}).values():
        if Path(run_dir).is_dir():
            folder = Path(run_dir) / "listening"
            folder.mkdir(exist_ok=True)
            written.append(_atomic(folder / f"{result['test']}.json", body.encode()))
    return written


def _atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
