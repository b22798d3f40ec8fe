"""A new user's first ten minutes, as they were found: a checkout's printed commands run in a
new shell, one's own data by name, a typo or a missing login never silently drops W&B, one
line for the common first mistakes, help without torch, names that tell runs apart."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def new_shell(home: Path) -> dict:
    """A new login's environment: no activated .venv, nothing of this test's Python."""
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TMPDIR", "USER")}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "WANDB_MODE": "offline", "TRITON_INTERPRET": "1"}


def printed(stdout: str, label: str) -> str:
    """The command a closing block prints after `label`."""
    [line] = [ln for ln in stdout.splitlines() if ln.strip().startswith(label)]
    return line.strip()[len(label):].strip().split("   (")[0]


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.slow  # four commands, each a new process (about a minute)
def test_a_checkouts_printed_commands_run_in_a_new_shell(tmp_path):
    """prepare -> the train command it prints -> the generate, evaluate and wandb commands
    the run prints, each run as printed from a new shell in the checkout (no .venv on PATH);
    the data are called by their manifest's name."""
    source = tmp_path / "my recordings"
    source.mkdir()
    t = np.arange(24000) / 16000
    for i in range(6):
        sf.write(source / f"take{i}.wav", 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t), 16000)
    env, before = new_shell(tmp_path), _clutter()
    out = tmp_path / "mine"
    prep = subprocess.run([sys.executable, "datasets/prepare.py", f"source={source}", "name=mine",
                           f"out_dir={out}", "valid_fraction=0.2", "test_fraction=0.2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    train_cmd = printed(prep.stdout, "train on it")
    run_dir = tmp_path / "run"
    train = subprocess.run(f"{train_cmd} debug=tiny eval.n_samples=0 hydra.run.dir={run_dir}",
                           shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dataset"]["name"] == "mine" and config["dataset"]["builtin"] is False
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "mine" and summary["code"]["samplernn"]
    assert summary["code"]["torch"] == torch.__version__
    assert summary["code"]["git_commit"] or not (ROOT / ".git").exists()  # a clone, or a tarball
    assert torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["code"] == \
        summary["code"]

    generate = subprocess.run(printed(train.stdout, "generate more") + " seconds=0.5",
                              shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert len(list((run_dir / "generated").glob("*/*.wav"))) == 4
    evaluate = printed(train.stdout, "evaluate")
    for protocol in ("files", "paper"):  # both results are kept, named by protocol
        done = subprocess.run(f"{evaluate} protocol={protocol}", shell=True, cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    results = sorted(p.name for p in (run_dir / "checkpoints").glob("eval_*.json"))
    assert results == ["eval_test_best_files.json", "eval_test_best_paper.json"]
    wandb = shlex.split(printed(train.stdout, "sync to W&B"))[0]
    assert subprocess.run(f"{wandb} --version", shell=True, cwd=ROOT, env=env,
                          capture_output=True, timeout=120).returncode == 0
    assert _clutter() == before  # no outputs/ folders in the checkout


def _clutter() -> set:
    return {str(p) for p in (ROOT / "outputs").rglob("*")} if (ROOT / "outputs").exists() else set()


@pytest.mark.parametrize("name, override", [
    ("train", "logger.mode=offlin"), ("train", "precision=fp61"), ("train", "train.order=shuffled"),
    ("train", "optim.clip=norm2"), ("train", "model.rnn_type=lstmm"), ("train", "model.q_type=mulaw"),
    ("train", "eval.protocol=paperr"), ("evaluate", "protocol=paperr"),
    ("generate", "backend=cuda"), ("generate", "precision=half"),
])
def test_a_typo_in_a_choice_fails_at_composition_naming_the_choices(name, override):
    done = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), override,
                           "checkpoint=x.pt"] if name != "train" else
                          [sys.executable, str(SCRIPTS / "train.py"), override],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    key, value = override.split("=")
    (said,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert said.startswith(f"error: {override}: Invalid value '{value}', expected one of ["), said


@pytest.mark.parametrize("override, said", [
    ("model=three_teir", "error: In 'train': Could not find 'model/three_teir'; Available options "
                         "in 'model': four_tier, quickstart, three_tier, tiny, two_tier"),
    ("train.max_step=5", "error: Could not override 'train.max_step': Key 'max_step' not in "
                         "'TrainLoopConfig'; To append to your config use +train.max_step=5"),
    ("seed=[1", "error: no viable alternative at input '[1'; See https://hydra.cc/"),
])
def test_an_override_hydra_cannot_apply_is_one_line(override, said):
    """A misspelt group option or key, or an override that does not parse: Hydra's message on
    one line (exit 2), the options named; HYDRA_FULL_ERROR=1 still gives Hydra's own report."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), override],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if line.strip()][0].startswith(said), \
        done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    full = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), override],
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True,
                          text=True, timeout=120)
    assert full.returncode == 1 and "Traceback" in full.stderr, full.stderr[-3000:]


def test_online_wandb_without_a_login_logs_offline_and_says_so(tiny_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "debug=tiny",
                           "logger.mode=online", f"dataset.path={tiny_dataset}",
                           "dataset.num_workers=0", "eval.n_samples=0",
                           f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env={**env, "HOME": str(tmp_path)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [ln for ln in done.stdout.splitlines() if "W&B logs this run offline" in ln]
    assert len(said) == 2 and said[-1].startswith("Note:"), done.stdout  # start and the end
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize("script, args, says", [
    ("generate.py", [], "say which model: "),
    ("evaluate.py", [], "say which model: "),
    ("generate.py", ["checkpoint=nowhere/best.pt"], "checkpoint nowhere/best.pt does not exist"),
])
def test_the_first_mistakes_are_one_line(tmp_path, script, args, says):
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert says in one_line_error(done)
    assert not list(tmp_path.iterdir())  # and nothing left behind


def test_a_slurm_sweep_without_its_extra_names_the_extra(tmp_path):
    """hydra-submitit-launcher hidden from the import system, as on a plain pip install."""
    hide = ("import importlib.util as u, sys; real = u.find_spec; "
            "u.find_spec = lambda n, *a: None if 'submitit' in n else real(n, *a); "
            f"sys.argv = ['samplernn-train', '-m', 'hydra/launcher=slurm']; "
            "from samplernn.cli import train; train()")
    done = subprocess.run([sys.executable, "-c", hide], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert "pip install 'samplernn[slurm]'" in one_line_error(done)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/set.zip", "{tmp}/no such file.zip"])
def test_a_download_that_cannot_be_had_is_one_line(tmp_path, url):
    dest = tmp_path / "dl"
    done = subprocess.run([sys.executable, str(ROOT / "datasets" / "download.py"),
                           url.format(tmp=tmp_path), str(dest)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert "set.zip" in one_line_error(done) or "no such file" in done.stderr
    assert not dest.exists()


def test_help_and_completion_never_import_torch(tmp_path):
    """A torch that cannot be imported: --help still explains the main keys and how to turn
    on completion, and a TAB's completion query still answers."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    for script in ("train", "generate", "evaluate", "benchmark"):
        done = subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), "--help"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "completion" in done.stdout and "precision=" in done.stdout, done.stdout
    done = subprocess.run([sys.executable, str(ROOT / "datasets" / "prepare.py"), "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "source=" in done.stdout, done.stderr[-3000:]
    query = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "-sc", "query=bash"],
                           cwd=tmp_path, env={**env, "COMP_LINE": "train.py model=th",
                                              "COMP_POINT": "18"},
                           capture_output=True, text=True, timeout=120)
    assert query.returncode == 0 and "model=three_tier" in query.stdout, query.stderr[-3000:]


@pytest.mark.slow  # a sweep of two jobs in one process (about 30 s)
def test_a_sweeps_runs_have_names_of_their_own(tiny_dataset, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "-m", "debug=tiny",
                           f"dataset.path={tiny_dataset}",
                           "dataset.num_workers=0", "eval.n_samples=0", "train.max_steps=2",
                           "model.frame_sizes=[16],[2,8]", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                          cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "sw").glob("*/summary.json"))]
    names = [r["name"] for r in runs]
    assert len(set(names)) == 2, names
    # the preset's own frame sizes [2, 8] keep its name; [16] does not pass for it
    assert sorted(names) == ["tiny(frame_sizes=[16])-s1", "tiny-s1"], names
