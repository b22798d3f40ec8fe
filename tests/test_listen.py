"""Listening tests (samplernn-listen): the statistics against known values, building a test
from runs, the server's rules (token, stimuli by id, every bad answer refused and nothing
changed, blinding, balance, coming back), answers that survive SIGKILL under 50 raters at
once, a real browser taking the test as two raters, and the results where they belong."""

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_train
from samplernn.audio import read_audio, write_wav
from samplernn.cli import listen_args
from samplernn.errors import AlreadyExists, ConfigError, NotFound
from samplernn.listen import results, stats
from samplernn.listen.build import build, condition_sources, loudness
from samplernn.listen.server import make_app
from samplernn.listen.store import Store
from samplernn.train import run as train

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("narrow", "wide")  # condition names: none of them may ever reach a rater


# ---------------------------------------------------------------- statistics

def test_wilson_and_binomial_against_published_values():
    # scipy 1.17: r = scipy.stats.binomtest(30, 40); r.pvalue = 0.0022214337732293643,
    # r.proportion_ci(0.95, method="wilson") = (0.5980603857923197, 0.858128813609037);
    # binomtest(8, 10).pvalue = 0.109375
    low, high = stats.wilson(30, 40)
    assert (low, high) == pytest.approx((0.5980603857923197, 0.858128813609037), abs=1e-12)
    assert stats.binomial_p(30, 40) == pytest.approx(0.0022214337732293643, abs=1e-15)
    assert stats.binomial_p(8, 10) == pytest.approx(0.109375, abs=1e-15)
    assert stats.binomial_p(20, 40) == 1.0
    assert stats.binomial_p(0, 10) == pytest.approx(2 / 1024)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson(0, 0) == (0.0, 1.0) and stats.binomial_p(0, 0) == 1.0


def test_mean_interval_and_post_screening():
    mean, low, high = stats.mean_ci([1, 2, 3, 4, 5])  # sd 1.5811, t(4) = 2.776
    assert mean == 3 and high - mean == pytest.approx(2.776 * 1.5811388 / math.sqrt(5), rel=1e-6)
    assert stats.mean_ci([]) == (None, None, None)
    rows = []
    for trial in range(10):  # rater a: hidden reference below 90 in 2 of 10 (20%): out
        rows += [("a", "ref", 80.0 if trial < 2 else 100.0), ("a", "x", 40.0)]
        rows += [("b", "ref", 85.0 if trial < 1 else 95.0), ("b", "x", 60.0)]  # 10%: kept
    out = stats.mushra(rows, ["ref", "x"], "ref")
    assert out["excluded"] == {"a": 0.2} and out["raters"] == 1
    assert out["conditions"][1] == {"condition": "x", "n": 10, "mean": 60.0, "ci_low": 60.0,
                                    "ci_high": 60.0}


def test_pairs_count_both_orders_and_ties():
    answers = [("x", "y", "x")] * 5 + [("y", "x", "x")] * 3 + [("y", "x", "y")] * 2 \
        + [("x", "y", None)]
    (pair,) = stats.pairs(answers, ["x", "y"])
    assert pair["a"] == "x" and (pair["a_wins"], pair["b_wins"], pair["ties"]) == (8, 2, 1)
    assert pair["n"] == 11 and pair["pref_a"] == 0.8
    assert pair["p_value"] == pytest.approx(stats.binomial_p(8, 10))
    assert stats.trials_to_exclude_half(0.8) == 11  # README: trials a preference needs


# ---------------------------------------------------------------- building a test

@pytest.fixture(scope="module")
def run_dirs(tiny_dataset, tmp_path_factory):
    """Two tiny runs of one preset that differ in width (the conditions of these tests)."""
    out = {}
    for name, dim in zip(NAMES, (16, 32)):
        run_dir = tmp_path_factory.mktemp(name)
        cfg = compose_train("debug=tiny", "logger=none", f"dataset.path={tiny_dataset}",
                            "dataset.builtin=false", "dataset.num_workers=0", "eval.n_samples=0",
                            f"model.dim={dim}")
        train(cfg, run_dir=run_dir)
        out[name] = run_dir
    return out


def build_test(out: Path, run_dirs, **options) -> dict:
    settings = dict(mode="ab", n_items=4, seconds=0.5, temperature=1.0, seed=1,
                    allow_tie=False, anchor_hz=3500.0, loudness_lufs=-23.0)
    settings.update(options)
    conditions = condition_sources({n: str(run_dirs[n]) for n in NAMES}, True)
    return build(out, conditions, **settings)


@pytest.fixture(scope="module")
def ab_test(run_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tests") / "ab"
    build_test(out, run_dirs, allow_tie=True)
    return out


def test_a_built_test_holds_equal_loudness_matched_stimuli_under_opaque_ids(ab_test):
    store = Store(ab_test / "listen.db")
    assert [c["name"] for c in store.conditions()] == [*NAMES, "real_data"]
    with store.connect() as db:
        rows = db.execute("SELECT id, condition, item, file FROM stimuli").fetchall()
        trials = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    assert len(rows) == 3 * 4 and trials == 3 * 4  # 3 pairs x 4 items
    lengths, levels = set(), []
    for sid, condition, item, file in rows:
        assert re.fullmatch(r"stimuli/[0-9a-f]{16}\.wav", file) and sid in file
        wav = read_audio(ab_test / file, 16000)
        lengths.add(len(wav))
        levels.append(loudness(wav, 16000))
    assert lengths == {8000}
    assert max(levels) - min(levels) < 0.5  # LU, after 16-bit rounding
    assert not any(n in p.name for p in (ab_test / "stimuli").iterdir() for n in NAMES)


def test_build_refuses_bad_conditions_in_one_line(run_dirs, tmp_path):
    with pytest.raises(ConfigError, match="at least two conditions, got 1"):
        condition_sources([str(run_dirs["narrow"])], False)
    with pytest.raises(NotFound, match="does not exist"):
        condition_sources([str(run_dirs["narrow"]), str(tmp_path / "nope")], False)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(NotFound, match="no checkpoints/best.pt or last.pt and no WAV"):
        condition_sources([str(run_dirs["narrow"]), str(empty)], False)
    with pytest.raises(ConfigError, match="named twice: narrow"):
        condition_sources([str(run_dirs["narrow"]), str(run_dirs["narrow"])], False)
    slow = tmp_path / "at_8k"
    slow.mkdir()
    for i in range(4):
        write_wav(slow / f"{i}.wav", np.zeros(8000, np.float32), 8000)
    conditions = condition_sources({"narrow": str(run_dirs["narrow"]), "slow": str(slow)}, False)
    with pytest.raises(ConfigError, match="different sample rates .*narrow 16000 Hz, slow 8000"):
        build(tmp_path / "t", conditions, mode="ab", n_items=2, seconds=0.5, temperature=1.0,
              seed=1, allow_tie=False, anchor_hz=3500.0, loudness_lufs=-23.0)
    conditions = condition_sources({n: str(run_dirs[n]) for n in NAMES}, False)
    with pytest.raises(ConfigError, match="mode=mushra needs the real data"):
        build(tmp_path / "t", conditions, mode="mushra", n_items=2, seconds=0.5,
              temperature=1.0, seed=1, allow_tie=False, anchor_hz=3500.0, loudness_lufs=-23.0)
    with pytest.raises(ConfigError, match=r"seconds=0.2: .* at least 0.4 s \(BS.1770"):
        build(tmp_path / "t", conditions, mode="ab", n_items=2, seconds=0.2,
              temperature=1.0, seed=1, allow_tie=False, anchor_hz=3500.0, loudness_lufs=-23.0)
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.partial").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(AlreadyExists, match="exists; give another test=<dir> or overwrite"):
        build(tmp_path / "taken", conditions, mode="ab", n_items=2, seconds=0.5,
              temperature=1.0, seed=1, allow_tie=False, anchor_hz=3500.0, loudness_lufs=-23.0)


def test_a_build_stopped_half_way_leaves_nothing(run_dirs, tmp_path, monkeypatch):
    import samplernn.listen.build as building

    class Stopped(building.Store):
        def create(self, *args):
            raise KeyboardInterrupt  # Ctrl-C while the database is written
    monkeypatch.setattr(building, "Store", Stopped)
    with pytest.raises(KeyboardInterrupt):
        build_test(tmp_path / "t", run_dirs, n_items=1)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_words_become_overrides():
    assert listen_args(["results", "tests/ab", "--json"]) == [
        "action=results", "test=tests/ab", "json=true"]
    assert listen_args(["build", "conditions=[a,b]", "test=x", "--cfg", "job"]) == [
        "action=build", "conditions=[a,b]", "test=x", "--cfg", "job"]


# ---------------------------------------------------------------- the server's rules

def _client(test_dir):
    app = make_app(test_dir)
    token = Store(test_dir / "listen.db").meta()["token"]
    return app.test_client(), f"/t/{token}/"


def _start(client, prefix) -> str:
    reply = client.get(prefix)
    assert reply.status_code == 302
    return reply.headers["Location"]


def _answers(test_dir) -> list:
    with sqlite3.connect(test_dir / "listen.db") as db:
        return db.execute("SELECT rater, trial, choice, scores FROM answers ORDER BY at").fetchall()


def test_every_route_needs_the_token_and_stimuli_go_by_id_only(ab_test):
    client, prefix = _client(ab_test)
    sid = next((ab_test / "stimuli").iterdir()).stem
    for path in ("/", "/t/", "/t/wrong/", f"/t/wrong/s/{sid}.wav", f"/t/x{prefix[3:]}",
                 "/static/x.js", prefix[:-2] + "/"):
        assert client.get(path).status_code == 403, path
    assert client.get(f"{prefix}s/{sid}.wav").status_code == 200
    (ab_test / "secret.txt").write_text("not for raters")
    for path in (f"{prefix}s/../../../etc/passwd", f"{prefix}s/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 f"{prefix}s//etc/passwd", f"{prefix}s/..%2fsecret.txt", f"{prefix}s/listen.db",
                 f"{prefix}s/{sid}", f"{prefix}s/{sid.upper()}.wav", f"{prefix}s/{'0' * 16}.wav"):
        reply = client.get(path)
        assert reply.status_code in (403, 404), path
        assert b"not for raters" not in reply.data and b"passwd" not in reply.data[:64]


def test_a_rater_sees_no_condition_name_and_gets_a_balanced_deal(ab_test):
    client, prefix = _client(ab_test)
    rater_url = _start(client, prefix)
    served = []
    store = Store(ab_test / "listen.db")
    condition = {}
    with store.connect() as db:
        condition = dict(db.execute("SELECT id, condition FROM stimuli"))
    shown_first = {}
    pairs = {}
    for k in range(12):
        page = client.get(rater_url)
        served.append(page.data)
        assert f"trial {k + 1} of 12".encode() in page.data
        ids = re.findall(rb"/s/([0-9a-f]{16})\.wav", page.data)
        assert len(ids) == 2 and page.data.count(b"<audio") == 2
        for sid in ids:
            served.append(client.get(f"{prefix}s/{sid.decode()}.wav").data)
        a, b = (condition[i.decode()] for i in ids)
        pair = tuple(sorted((a, b)))
        pairs[pair] = pairs.get(pair, 0) + 1
        shown_first.setdefault(pair, []).append(a)
        trial = int(re.search(rb"const trial = (\d+)", page.data).group(1))
        assert client.post(rater_url + "answer", json={"trial": trial, "choice": "B",
                                                       "plays": {"A": 1}}).status_code == 201
    assert set(pairs.values()) == {4}  # every pair of conditions the same number of trials
    for firsts in shown_first.values():  # each side of a pair first in half of its trials
        assert sorted(firsts.count(c) for c in set(firsts)) == [2, 2]
    assert b"Thank you" in client.get(rater_url).data
    for name in (*NAMES, "real_data", str(ab_test)):
        assert not any(name.encode() in body for body in served), name


def test_bad_answers_are_refused_and_change_nothing(ab_test, run_dirs, tmp_path):
    client, prefix = _client(ab_test)
    rater_url = _start(client, prefix)
    page = client.get(rater_url).data
    trial = int(re.search(rb"const trial = (\d+)", page).group(1))
    before = _answers(ab_test)
    bad = {
        "not JSON": (dict(data="{trial: 1", content_type="application/json"), 400),
        "a list": (dict(json=[1, 2]), 400),
        "no trial": (dict(json={"choice": "A"}), 400),
        "trial as text": (dict(json={"trial": "1", "choice": "A"}), 400),
        "unknown trial": (dict(json={"trial": 99999, "choice": "A"}), 404),
        "bad choice": (dict(json={"trial": trial, "choice": "C"}), 422),
        "plays of a stranger": (dict(json={"trial": trial, "choice": "A", "plays": {"Z": 1}}), 422),
        "negative time": (dict(json={"trial": trial, "choice": "A", "seconds": -1}), 422),
        "oversized": (dict(json={"trial": trial, "choice": "A", "pad": "x" * 20000}), 413),
    }
    for why, (kwargs, code) in bad.items():
        reply = client.post(rater_url + "answer", **kwargs)
        assert reply.status_code == code, (why, reply.status_code, reply.data)
        assert reply.is_json and reply.get_json()["error"], why
    assert client.post(prefix + "r/0123456789abcdef/answer",
                       json={"trial": trial, "choice": "A"}).status_code == 404
    assert _answers(ab_test) == before
    first = client.post(rater_url + "answer", json={"trial": trial, "choice": "A"})
    assert first.status_code == 201
    again = client.post(rater_url + "answer", json={"trial": trial, "choice": "B"})
    assert again.status_code == 409 and "already answered" in again.get_json()["error"]
    assert len(_answers(ab_test)) == len(before) + 1
    assert _answers(ab_test)[-1][2] is not None  # the first answer stands

    # a trial not dealt to this rater (each rater gets one item's trials), and no ties here
    out = tmp_path / "one_item"
    build_test(out, run_dirs, n_items=2, items_per_rater=1)
    client, prefix = _client(out)
    mine = _start(client, prefix)
    other = client.application.test_client()
    theirs = _start(other, prefix)
    my_trials = {int(t) for t in re.findall(rb"const trial = (\d+)", client.get(mine).data)}
    with sqlite3.connect(out / "listen.db") as db:
        mine_set, their_set = (
            {t for (t,) in db.execute("SELECT trial FROM deals WHERE rater = ?",
                                      (url.rstrip("/").rsplit("/", 1)[1],))}
            for url in (mine, theirs))
    assert len(mine_set) == len(their_set) == 3 and not mine_set & their_set  # items rotate
    assert my_trials <= mine_set
    reply = client.post(mine + "answer", json={"trial": min(their_set), "choice": "A"})
    assert reply.status_code == 404 and "not dealt" in reply.get_json()["error"]
    reply = client.post(mine + "answer", json={"trial": min(mine_set), "choice": "none"})
    assert reply.status_code == 422  # allow_tie is off
    assert _answers(out) == []


def test_a_rater_comes_back_to_the_same_place(ab_test):
    client, prefix = _client(ab_test)
    rater_url = _start(client, prefix)
    for _ in range(3):
        trial = int(re.search(rb"const trial = (\d+)", client.get(rater_url).data).group(1))
        client.post(rater_url + "answer", json={"trial": trial, "choice": "none"})
    assert _start(client, prefix) == rater_url  # the cookie brings them back
    assert b"trial 4 of 12" in client.get(rater_url).data
    fresh = client.application.test_client()
    assert _start(fresh, prefix) != rater_url  # another browser is another rater


def test_mushra_pages_scores_and_results(run_dirs, tmp_path):
    out = tmp_path / "mushra"
    build_test(out, run_dirs, mode="mushra", n_items=2)
    client, prefix = _client(out)
    raters = []
    for kind in ("careful", "careless"):
        rater_url = _start(client.application.test_client(), prefix)
        raters.append(rater_url)
        for _ in range(2):
            page = client.get(rater_url).data
            trial = int(re.search(rb"const trial = (\d+)", page).group(1))
            keys = [k.decode() for k in re.findall(rb'data-stimulus="(\d+)"', page)]
            assert len(keys) == 4 and page.count(b"<audio") == 5  # reference + 4 to score
            assert client.post(rater_url + "answer", json={
                "trial": trial, "scores": {k: 101 for k in keys}}).status_code == 422
            assert client.post(rater_url + "answer", json={
                "trial": trial, "scores": {k: 50 for k in keys[1:]}}).status_code == 422
            # score by what the stimulus is: the hidden reference 100 (careless: 50)
            store = Store(out / "listen.db")
            shown = store.dealt(rater_url.rstrip("/").rsplit("/", 1)[1], trial)
            with store.connect() as db:
                condition = dict(db.execute("SELECT id, condition FROM stimuli"))
            value = {"hidden_reference": 100 if kind == "careful" else 50, "anchor": 20,
                     "narrow": 40, "wide": 60}
            scores = {k: value[condition[s]] for k, s in zip(keys, shown[1:])}
            assert client.post(rater_url + "answer", json={"trial": trial, "scores": scores,
                                                           "plays": {"R": 2}}).status_code == 201
    result = results.compute(out)
    assert result["mushra"]["raters"] == 1 and len(result["mushra"]["excluded"]) == 1
    means = {r["condition"]: r["mean"] for r in result["mushra"]["conditions"]}
    assert means == {"hidden_reference": 100.0, "anchor": 20.0, "narrow": 40.0, "wide": 60.0}
    assert "excluded by post-screening" in results.text(result)


# ---------------------------------------------------------------- the real server

def _serve(test_dir: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "listen.py"), "serve",
                               str(test_dir), "port=0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=test_dir.parent)
    line = server.stdout.readline()
    url = re.search(r"http://\S+", line)
    assert url, f"serve printed {line!r}"
    return server, url.group(0)


class Rater(threading.Thread):
    """One simulated rater over HTTP: their page, then an answer to each trial."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.given, self.error = url, [], None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.rater_url = None

    def run(self):
        try:
            if self.rater_url is None:
                self.rater_url = self.opener.open(self.url, timeout=60).geturl()
            while True:
                page = self.opener.open(self.rater_url, timeout=60).read()
                match = re.search(rb"const trial = (\d+)", page)
                if not match:
                    return
                trial = int(match.group(1))
                body = json.dumps({"trial": trial, "choice": "AB"[trial % 2],
                                   "plays": {"A": 1, "B": 1}, "seconds": 1.5}).encode()
                request = urllib.request.Request(self.rater_url + "answer", body,
                                                 {"Content-Type": "application/json"})
                assert self.opener.open(request, timeout=60).status == 201
                self.given.append(trial)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error


def test_fifty_raters_at_once_and_a_sigkill_lose_no_answer(ab_test, tmp_path):
    import shutil
    test = tmp_path / "load"
    shutil.copytree(ab_test, test)
    with sqlite3.connect(test / "listen.db") as db:  # the earlier tests' raters out
        db.execute("DELETE FROM answers")
        db.execute("DELETE FROM deals")
        db.execute("DELETE FROM raters")
    server, url = _serve(test)
    try:
        raters = [Rater(url) for _ in range(50)]
        for r in raters:
            r.start()
        deadline = time.monotonic() + 120
        while len(_answers(test)) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)  # in the middle: raters are answering
        server.wait(timeout=30)
        for r in raters:
            r.join(timeout=120)
        assert not any(r.is_alive() for r in raters)
        stored = {(rater, trial) for rater, trial, _, _ in _answers(test)}
        assert 200 <= len(stored) < 50 * 12 == 600
        assert any(r.error for r in raters)  # the kill did cut raters off
        for r in raters:  # every answer a rater was told is stored, is there
            assert {(r.rater_url.rstrip("/").rsplit("/", 1)[1], t) for t in r.given} <= stored
        server, url = _serve(test)  # restarted: every rater continues where they were
        new_base = url.split("/t/")[0]
        for r in raters:
            if r.rater_url is None:  # cut off before their first page: a new rater
                r.rater_url = r.opener.open(url, timeout=60).geturl()
            r.rater_url = new_base + "/t/" + r.rater_url.split("/t/", 1)[1]
            r.error = None
            r.run()  # in turn: the rest of each rater's trials
            assert r.error is None
        rows = [(rater, trial) for rater, trial, _, _ in _answers(test)]
        assert len(rows) == 50 * 12 == len(set(rows))  # none lost, none twice
    finally:
        server.kill()
        server.wait(timeout=30)
    result = results.compute(test)
    assert result["raters"] == 50 and sum(p["n"] for p in result["pairs"]) == 600


# ---------------------------------------------------------------- results

def test_results_as_json_chart_and_beside_the_runs(run_dirs, tmp_path):
    test = tmp_path / "counted"
    build_test(test, run_dirs, n_items=2)
    client, prefix = _client(test)
    for _ in range(2):
        rater_url = _start(client.application.test_client(), prefix)
        store = Store(test / "listen.db")
        with store.connect() as db:
            condition = dict(db.execute("SELECT id, condition FROM stimuli"))
        while True:
            page = client.get(rater_url).data
            match = re.search(rb"const trial = (\d+)", page)
            if not match:
                break
            ids = [i.decode() for i in re.findall(rb"/s/([0-9a-f]{16})\.wav", page)]
            a, b = (condition[i] for i in ids)  # wide always wins; narrow beats the data
            order = {"wide": 0, "narrow": 1, "real_data": 2}
            choice = "A" if order[a] < order[b] else "B"
            client.post(rater_url + "answer", json={"trial": int(match.group(1)),
                                                    "choice": choice})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "listen.py"), "results",
                           str(test), "--json", "wandb=false"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert set(pairs) == {("narrow", "wide"), ("narrow", "real_data"), ("wide", "real_data")}
    fields = {"a", "b", "n", "a_wins", "b_wins", "ties", "pref_a", "ci_low", "ci_high", "p_value"}
    assert all(set(p) == fields for p in result["pairs"])
    counts = {k: (p["n"], p["a_wins"], p["b_wins"], p["ties"]) for k, p in pairs.items()}
    assert counts == {("narrow", "wide"): (4, 0, 4, 0), ("narrow", "real_data"): (4, 4, 0, 0),
                      ("wide", "real_data"): (4, 4, 0, 0)}  # 2 raters x 2 items per pair
    assert pairs["narrow", "wide"]["pref_a"] == 0.0
    assert pairs["narrow", "wide"]["p_value"] == pytest.approx(0.125)  # 2 x (1/2)^4
    assert (pairs["narrow", "wide"]["ci_low"], pairs["narrow", "wide"]["ci_high"]) == \
        pytest.approx(stats.wilson(0, 4))
    assert result["raters"] == 2 and result["answers"] == 12
    assert (test / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in NAMES:
        beside = json.loads((run_dirs[name] / "listening" / "counted.json").read_text())
        assert beside["pairs"] == result["pairs"]
    from samplernn.report import write_report
    page = write_report([run_dirs["narrow"]], tmp_path / "report.html").read_text()
    assert "<h2>Listening tests</h2>" in page and "counted (ab)" in page
    assert re.search(r"narrow vs real_data\s+4\s+4\s+0\s+0", page)


# ---------------------------------------------------------------- a real browser

def _chromium_or_skip():
    from cdp import CHROMIUM
    if CHROMIUM.exists():
        return
    if os.environ.get("SAMPLERNN_BROWSER") == "1":
        pytest.fail(f"SAMPLERNN_BROWSER=1 but {CHROMIUM} is missing; apt-get install -y chromium")
    pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium); set SAMPLERNN_BROWSER=1 "
                "to require it")


def _artifact(path: Path):
    if os.environ.get("SAMPLERNN_ARTIFACTS"):
        folder = Path(os.environ["SAMPLERNN_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())


def test_two_raters_in_chromium_click_through_an_ab_test_and_a_mushra_trial(
        run_dirs, tmp_path):
    _chromium_or_skip()
    from cdp import Browser
    ab = tmp_path / "browser_ab"
    build_test(ab, run_dirs, n_items=2, allow_tie=True)
    mushra = tmp_path / "browser_mushra"
    build_test(mushra, run_dirs, mode="mushra", n_items=1)
    browser = Browser(tmp_path / "profile")
    server, url = _serve(ab)
    try:
        raters = [browser.page(url), browser.page(url)]
        raters[0].wait_for("document.querySelector('audio').readyState >= 1")
        raters[0].screenshot(tmp_path / "listen_ab_trial.png")
        _artifact(tmp_path / "listen_ab_trial.png")
        assert raters[0].js("document.querySelectorAll('audio').length") == 2
        raters[0].wait_for("[...document.querySelectorAll('audio')].every(a => "
                           "Math.abs(a.duration - 0.5) < 0.01)")  # the stimuli load and play
        clicked = [[], []]
        for k in range(6):  # both raters at once, a click each in turn
            for i, page in enumerate(raters):
                assert page.text("#progress") == f"trial {k + 1} of 6"
                choice = ["A", "B", "none"][(k + i) % 3]
                page.click(f'button[data-choice="{choice}"]')
                clicked[i].append(choice)
            for page in raters:
                page.wait_for(f"document.getElementById('progress') && "
                              f"document.getElementById('progress').textContent !== "
                              f"'trial {k + 1} of 6'")
        for page in raters:
            assert page.text("h1") == "Thank you"
    finally:
        server.kill()
        server.wait(timeout=30)
    stored = Store(ab / "listen.db").answers()
    assert len(stored) == 12 and len({a["rater"] for a in stored}) == 2
    assert sorted(a["choice"] is None for a in stored) == sorted(
        c == "none" for c in clicked[0] + clicked[1])
    result = results.compute(ab)
    assert sum(p["n"] for p in result["pairs"]) == 12
    assert sum(p["ties"] for p in result["pairs"]) == (clicked[0] + clicked[1]).count("none")

    server, url = _serve(mushra)
    try:
        page = browser.page(url)
        keys = page.js("[...document.querySelectorAll('input[type=range]')]"
                       ".map(s => s.dataset.stimulus)")
        assert keys == ["1", "2", "3", "4"]  # hidden reference, anchor, narrow, wide
        for j, key in enumerate(keys):  # each slider clicked at its own place
            page.click(f'input[data-stimulus="{key}"]', x_fraction=0.2 + 0.2 * j)
        page.screenshot(tmp_path / "listen_mushra_trial.png")
        _artifact(tmp_path / "listen_mushra_trial.png")
        page.click("#submit")
        page.wait_for("document.querySelector('h1').textContent === 'Thank you'")
    finally:
        server.kill()
        server.wait(timeout=30)
    (answer,) = Store(mushra / "listen.db").answers()
    shown = sorted(answer["scores"].values())
    assert len(shown) == 4 and all(0 <= s <= 100 for s in shown)
    for got, want in zip(shown, (20, 40, 60, 80)):  # where the slider was clicked
        assert abs(got - want) <= 6
    browser.close()


def test_results_go_to_wandb_offline_in_the_runs_group(tmp_path, monkeypatch):
    from samplernn.logger import log_listening
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = {"test": "tiers_ab", "mode": "ab", "raters": 2, "answers": 8, "group": "tiers-sweep",
              "pairs": stats.pairs([("x", "y", "x")] * 6 + [("x", "y", "y")] * 2, ["x", "y"])}
    chart = tmp_path / "results.png"
    chart.write_bytes(results.chart_png(result))
    hint = log_listening(result, chart, tmp_path)
    (run,) = tmp_path.glob("wandb/offline-run-*")
    assert hint and hint.endswith(run.name.rsplit("-", 1)[1])  # wandb sync <that>
    (log,) = run.glob("run-*.wandb")
    data = log.read_bytes()
    for expected in (b"listening/results", b"listening/chart", b"tiers-sweep", b"listen"):
        assert expected in data, expected
