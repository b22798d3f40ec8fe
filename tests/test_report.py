"""The comparison report: figures equal the run directories, missing pieces shown, page renders.

Unit tests read fabricated run directories written exactly as the trainer's contract says
(config.yaml, summary.json, metrics.jsonl, checkpoints/, samples/step_<N>/sample_<K>.wav + .json).
The `browser` tests open the page in headless Chromium (Debian's `chromium`); they skip when it
is absent unless SAMPLERNN_BROWSER=1, and save a screenshot (copied to $SAMPLERNN_ARTIFACTS).
"""

import html as html_lib
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from samplernn import report
from samplernn.audio import write_wav
from samplernn.plots import curves_png, spectrogram_png, waveform_png

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CHROMIUM = Path("/usr/bin/chromium")
SR = 8000
FRAME_SIZES = {"two_tier": [16], "three_tier": [2, 8], "four_tier": [2, 8, 32]}


def make_run(run_dir: Path, preset: str, seed: int, *, test=None, valid=(6.0, 5.5, 5.2), dim=32,
             summary="full", n_samples=2, crashed=False, group="tiers"):
    """Write one run directory as the trainer does. summary: "full", "partial" (no best valid,
    no train samples/s: the report must derive them from metrics.jsonl) or None (none written)."""
    run_dir.mkdir(parents=True)
    tiers = len(FRAME_SIZES[preset]) + 1
    config = {"seed": seed, "group": group, "experiment_name": "tiers",
              "model": {"frame_sizes": FRAME_SIZES[preset], "dim": dim, "n_rnn": 1, "rnn_type": "gru"},
              "dataset": {"name": "sines", "path": "data/sines"},
              "train": {"max_steps": 30, "batch_size": 4, "seq_len": 256}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"model": preset, "dataset": "sines"}}}}))
    rows = []
    for i, nll in enumerate(valid):
        step = 10 * (i + 1)
        rows.append({"step": step, "time_s": 2.0 * step, "train/nll_bits": nll + 0.1,
                     "perf/samples_per_s": 1000.0 * tiers + step})
        rows.append({"step": step, "time_s": 2.0 * step + 1, "valid/nll_bits": nll})
    if test is not None:
        rows.append({"step": rows[-1]["step"], "time_s": 70.0, "test/nll_bits": test})
        rows.append({"step": rows[-1]["step"], "time_s": 75.0, "perf/gen_samples_per_s": 500.0 * tiers})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run_dir / "metrics.jsonl").write_text(text + ('{"step": 40, "time_' if crashed else ""))
    (run_dir / "train.log").write_text("step 10\n" + ("Traceback (most recent call last):\n  boom\n"
                                                      if crashed else "done\n"))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    t = np.arange(SR // 2) / SR
    for k in range(n_samples):
        wav = 0.5 * np.sin(2 * np.pi * (220 * (k + 1) * tiers) * t) * np.exp(-t)
        write_wav(run_dir / "samples" / "step_30" / f"sample_{k}.wav", wav, SR)
        (run_dir / "samples" / "step_30" / f"sample_{k}.json").write_text(json.dumps(
            {"checkpoint": "checkpoints/last.pt", "step": 30, "temperature": 1.0, "seed": k,
             "seconds": 0.5, "sample_rate": SR, "gen_samples_per_s": 500.0 * tiers}))
    if summary:
        s = {"preset": preset, "tiers": tiers, "n_parameters": 1000 * tiers + dim, "sample_rate": SR,
             "status": "finished", "step": 30, "wall_time_s": 75.0, "best_valid_nll_bits": min(valid),
             "test_nll_bits": test, "train_samples_per_s": 1000.0 * tiers + 20, "gen_samples_per_s": 500.0 * tiers}
        if summary == "partial":
            del s["best_valid_nll_bits"], s["train_samples_per_s"]
        (run_dir / "summary.json").write_text(json.dumps(s))
    return run_dir


TEST_NLL = {("two_tier", 1): 5.31, ("two_tier", 2): 5.27, ("two_tier", 3): 5.35,
            ("three_tier", 1): 5.12, ("three_tier", 2): 5.18, ("three_tier", 3): 5.16}


@pytest.fixture
def sweep(tmp_path):
    """A multirun of 2- and 3-tier x 3 seeds, plus a crashed 4-tier run given as its own run dir."""
    multirun = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    for i, ((preset, seed), test) in enumerate(TEST_NLL.items()):
        make_run(multirun / str(i), preset, seed, test=test,
                 valid=(6.0, 5.4 - seed / 100, 5.3 - seed / 50),
                 summary="partial" if (preset, seed) == ("three_tier", 2) else "full",
                 n_samples=0 if (preset, seed) == ("three_tier", 3) else 2)
    (multirun / "multirun.yaml").write_text("hydra: {}\n")
    crashed = make_run(tmp_path / "runs" / "crashed", "four_tier", 1, valid=(6.1, 5.9),
                       summary=None, n_samples=0, crashed=True)
    return multirun, crashed


def _md_rows(markdown: str, first_header: str) -> list[dict]:
    """Rows of every Markdown table whose first column is `first_header`, as dicts."""
    rows, header = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells if cells[0] == first_header else []
        elif header and not line.startswith("|---"):
            rows.append(dict(zip(header, cells)))
    return rows


def test_finds_runs_in_multirun_and_run_dirs(sweep):
    multirun, crashed = sweep
    records = report.collect_runs([multirun, crashed])
    assert len(records) == 7
    assert {r.group for r in records} == {"tiers"}
    with pytest.raises(report.ReportError, match="not a directory"):
        report.collect_runs([multirun / "nope"])
    with pytest.raises(report.ReportError, match="holds no run directory"):
        report.collect_runs([crashed / "checkpoints"])


def test_markdown_summary_figures_equal_metrics(sweep):
    records = report.collect_runs(list(sweep))
    rows = {r["preset"]: r for r in _md_rows(report.markdown_table(records), "preset")}
    assert set(rows) == {"two_tier", "three_tier", "four_tier"}
    best_mean = min(statistics.fmean(v for (p, _), v in TEST_NLL.items() if p == preset)
                    for preset in ("two_tier", "three_tier"))
    for preset, tiers in (("two_tier", 2), ("three_tier", 3)):
        tests = [v for (p, _), v in TEST_NLL.items() if p == preset]
        mean, std = statistics.fmean(tests), statistics.stdev(tests)
        row = rows[preset]
        assert row["test NLL (bits)"] == f"{mean:.3f} ± {std:.3f} (n=3)"
        assert row["Δ test vs best"] == ("best" if mean == best_mean else f"+{mean - best_mean:.3f}")
        valid_best = [5.3 - seed / 50 for seed in (1, 2, 3)]  # min of each run's valid/nll_bits
        assert row["best valid NLL (bits)"] == (f"{statistics.fmean(valid_best):.3f} ± "
                                                f"{statistics.stdev(valid_best):.3f} (n=3)")
        assert row["tiers"] == str(tiers) and row["seeds"] == "3"
        assert row["params"] == f"{1000 * tiers + 32:,}"
        assert row["gen samples/s"] == f"{500 * tiers:,} (n=3)"
    # three_tier seed 2 has no train samples/s in summary.json: the mean of perf/samples_per_s it logged
    assert rows["three_tier"]["train samples/s"] == f"{statistics.fmean([3020, 3020, 3020]):,.0f} (n=3)"
    assert rows["four_tier"]["test NLL (bits)"] == report.MISSING
    assert rows["four_tier"]["best valid NLL (bits)"] == "5.900 (n=1)"


def test_markdown_run_rows_equal_metrics(sweep):
    records = report.collect_runs(list(sweep))
    runs = _md_rows(report.markdown_table(records), "run")
    assert len(runs) == 7
    by_label = {r["run"]: r for r in runs}
    for (preset, seed), test in TEST_NLL.items():
        row = by_label[f"{preset} seed={seed}"]
        assert row["test NLL (bits)"] == f"{test:.3f}"
        assert row["best valid NLL (bits)"] == f"{5.3 - seed / 50:.3f}"
        assert row["status"] == "finished" and row["step"] == "30"
    crashed = by_label["four_tier seed=1"]
    assert crashed["status"].startswith("failed") and "no summary.json" in crashed["status"]
    assert crashed["test NLL (bits)"] == report.MISSING and crashed["samples"] == "none yet"
    assert crashed["step"] == "20"  # the last complete metrics line
    assert by_label["three_tier seed=3"]["samples"] == "none yet"
    assert by_label["two_tier seed=1"]["samples"] == "2 (latest step 30)"


def test_config_differences_and_seed_aggregation(tmp_path):
    a = make_run(tmp_path / "a", "three_tier", 1, test=5.0, dim=32)
    b = make_run(tmp_path / "b", "three_tier", 2, test=5.2, dim=32)
    c = make_run(tmp_path / "c", "three_tier", 1, test=4.8, dim=64)
    records = report.collect_runs([a, b, c])
    diffs = report.config_differences(records)
    assert set(diffs) == {"seed", "model.dim"}
    assert sorted(diffs["model.dim"]) == [32, 32, 64]
    rows = report.group_rows(records)["tiers"]
    assert [(len(r.runs), r.variant) for r in rows] == [(2, "model.dim=32"), (1, "model.dim=64")]
    assert rows[0].stat("test_nll_bits") == pytest.approx((5.1, statistics.stdev([5.0, 5.2]), 2))
    page = report.write_report([a, b, c], tmp_path / "r.html").read_text()
    diff_table = re.search(r'<table class="configdiff">.*?</table>', page).group(0)
    assert "model.dim" in diff_table and "dataset.path" not in diff_table
    assert diff_table.count('class="diff"') == 2  # dim 64 and the odd seed out


def test_html_is_self_contained_and_marks_missing_pieces(sweep, tmp_path):
    out = report.write_report(list(sweep), tmp_path / "out" / "report.html")
    page = out.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    audio = re.findall(r'<audio [^>]*src="([^"]+)"', page)
    assert len(audio) == 5 * 2  # 5 runs with 2 samples each
    assert all(src.startswith("report_files/") and (out.parent / src).is_file() for src in audio)
    assert page.count("No samples yet.") == 2
    assert "no summary.json" in page and "traceback in train.log" in page
    assert "metrics.jsonl: 1 line(s) are not JSON" in page
    assert len(re.findall(r"<tr", re.search(r'<table class="runs">.*?</table>', page).group(0))) == 8
    assert not list(out.parent.glob("*.partial"))


def test_broken_pieces_never_stop_the_report(tmp_path):
    started = tmp_path / "died_at_start"
    started.mkdir()
    (started / "config.yaml").write_text(yaml.safe_dump({"seed": 4, "group": "tiers",
                                                          "model": {"frame_sizes": [16]}}))
    failed = make_run(tmp_path / "failed", "two_tier", 5, valid=(6.0,), n_samples=1)
    summary = json.loads((failed / "summary.json").read_text())
    (failed / "summary.json").write_text(json.dumps({**summary, "status": "failed", "test_nll_bits": None}))
    (failed / "samples" / "step_30" / "sample_0.wav").write_bytes(b"RIFF not really")
    (failed / "metrics.jsonl").write_text('{"step": "x", "valid/nll_bits": "nan"}\n' +
                                          (failed / "metrics.jsonl").read_text())
    records = report.collect_runs([started, failed])
    runs = {r["run"]: r for r in _md_rows(report.markdown_table(records), "run")}
    assert runs["2_tier seed=4"]["status"] == "incomplete (no summary.json)"
    assert runs["2_tier seed=4"]["step"] == report.MISSING
    assert runs["two_tier seed=5"]["status"] == "failed"
    assert runs["two_tier seed=5"]["test NLL (bits)"] == report.MISSING
    page = report.write_report([started, failed], tmp_path / "r.html").read_text()
    assert "unreadable" in page and "<audio" not in page


def test_command_line(sweep, tmp_path, capsys):
    out = tmp_path / "cli" / "cmp.html"
    assert report.run([str(p) for p in sweep] + [f"out={out}"]) == 0
    captured = capsys.readouterr()
    assert "| preset |" in captured.out and "| run |" in captured.out
    assert out.is_file() and (out.parent / "cmp_files").is_dir()
    assert report.run([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_plots_make_pngs():
    wav = 0.5 * np.sin(np.linspace(0, 2000, 40000)).astype(np.float32)
    for png in (waveform_png(wav, 16000), spectrogram_png(wav, 16000), waveform_png(wav[:0], 16000),
                spectrogram_png(wav[:10], 16000), curves_png([("a", [1, 2], [3.0, 2.0])], "step"),
                curves_png([], "step")):
        width, height = _png_size(png)
        assert width > 100 and height > 100
    with pytest.raises(ValueError, match="1-D"):
        waveform_png(np.zeros((2, 10)), 16000)


def _compose_train(overrides, return_hydra_config=False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=return_hydra_config)


def test_slurm_launcher_composes():
    cfg = _compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.timeout_min > 0 and launcher.gpus_per_node == 1


def test_slurm_launcher_keys_match_the_plugin():
    plugin = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config",
                                 reason="hydra-submitit-launcher is not installed")
    from dataclasses import fields

    from omegaconf import OmegaConf

    ours = set(OmegaConf.load(CONFIGS / "hydra" / "launcher" / "slurm.yaml")) - {"defaults"}
    assert ours <= {f.name for f in fields(plugin.SlurmQueueConf)}


# ---------------------------------------------------------------- headless Chromium

CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const audios = [...document.querySelectorAll('audio')];
  let written = false, pending = audios.length;
  const done = () => {
    if (written) return; written = true;
    const out = {images: [...document.images].map(i => i.naturalWidth),
                 audio: audios.map(a => ({src: a.getAttribute('src'), duration: a.duration,
                                          error: a.error ? a.error.code : null})),
                 runRows: document.querySelectorAll('table.runs tbody tr').length};
    const pre = document.createElement('pre'); pre.id = 'check';
    pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
  };
  const one = () => { if (--pending <= 0) done(); };
  if (!pending) done();
  audios.forEach(a => {
    if (a.readyState >= 1) one();
    else { a.addEventListener('loadedmetadata', one, {once: true}); a.addEventListener('error', one, {once: true}); }
  });
  setTimeout(done, 8000);
});
</script>"""


def _chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("SAMPLERNN_BROWSER") == "1":
        pytest.fail(f"SAMPLERNN_BROWSER=1 but {CHROMIUM} is missing; apt-get install -y chromium")
    pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium); set SAMPLERNN_BROWSER=1 to require it")


def _chromium(args, profile: Path) -> str:
    command = [str(_chromium_or_skip()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--mute-audio", f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def check_in_browser(page: Path, tmp_path: Path, n_runs: int, screenshot_name: str) -> dict:
    """Serve the report's folder over http://127.0.0.1, run CHECK_SCRIPT on a copy of the page,
    assert images decoded, audio metadata loaded and one runs-table row per run; screenshot it."""
    html_text = page.read_text()
    check_page = page.with_name("_check_" + page.name)
    check_page.write_text(html_text.replace("</body>", CHECK_SCRIPT + "</body>"))
    handler = partial(SimpleHTTPRequestHandler, directory=str(page.parent))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        dom = _chromium(["--dump-dom", "--virtual-time-budget=15000", base + check_page.name],
                        tmp_path / "profile-dom")
        shot = tmp_path / screenshot_name
        _chromium([f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars",
                   "--virtual-time-budget=5000", base + page.name], tmp_path / "profile-shot")
    finally:
        server.shutdown()
        check_page.unlink()
    match = re.search(r'<pre id="check">(.*?)</pre>', dom, re.S)
    assert match, f"the check script wrote no result; DOM tail:\n{dom[-2000:]}"
    result = json.loads(html_lib.unescape(match.group(1)))
    assert result["images"] and all(w > 0 for w in result["images"]), result["images"]
    assert result["audio"], "the page has no audio players"
    bad = [a for a in result["audio"] if not (a["duration"] and a["duration"] > 0)]
    assert not bad, f"audio without metadata: {bad}"
    assert result["runRows"] == n_runs
    assert shot.is_file() and shot.stat().st_size > 10_000
    if os.environ.get("SAMPLERNN_ARTIFACTS"):
        Path(os.environ["SAMPLERNN_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["SAMPLERNN_ARTIFACTS"]) / screenshot_name)
    return result


@pytest.mark.browser
def test_fabricated_report_renders_in_browser(sweep, tmp_path):
    _chromium_or_skip()
    page = report.write_report(list(sweep), tmp_path / "site" / "report.html")
    result = check_in_browser(page, tmp_path, n_runs=7, screenshot_name="report_fabricated.png")
    assert len(result["audio"]) == 10


@pytest.mark.browser
def test_report_of_two_tiny_cpu_runs_renders_in_browser(tmp_path):
    _chromium_or_skip()
    from samplernn.train import run as train_run

    run_dirs = []
    for seed in (1, 2):
        run_dir = tmp_path / "runs" / f"seed{seed}"
        cfg = _compose_train(["debug=tiny", f"hydra.run.dir={run_dir}", "logger=none", "model=tiny",
                              f"seed={seed}"])
        train_run(cfg, run_dir=run_dir)
        run_dirs.append(run_dir)
    page = report.write_report(run_dirs, tmp_path / "site" / "report.html")
    check_in_browser(page, tmp_path, n_runs=2, screenshot_name="report_tiny_runs.png")
    rows = _md_rows(report.markdown_table(report.collect_runs(run_dirs)), "run")
    for row, run_dir in zip(sorted(rows, key=lambda r: r["seed"]), run_dirs):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert row["test NLL (bits)"] == f"{summary['test_nll_bits']:.3f}"


def test_the_seeds_column_counts_distinct_seeds(sweep):
    """A seed run twice is one seed: two_tier has runs of seeds 1, 2, 3 and 1 again."""
    multirun, crashed = sweep
    make_run(multirun.parent / "again", "two_tier", 1, test=5.30, valid=(6.0, 5.3),
             summary="full", n_samples=0)
    records = report.collect_runs([multirun, multirun.parent / "again"])
    rows = {r["preset"]: r for r in _md_rows(report.markdown_table(records), "preset")}
    assert rows["two_tier"]["seeds"] == "3 (4 runs)" and "(n=4)" in rows["two_tier"]["test NLL (bits)"]
