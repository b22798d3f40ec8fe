"""A listening test's database (SQLite, `listen.db` in the test directory): the test's
conditions, stimuli and trials (written once, at build), the raters and the trials dealt to
each, and every answer, committed the moment it is given.

One connection per use (the server's threads each open their own); WAL journal, so readers
never wait on the writer, and a process killed at any moment keeps every committed answer.
A second answer to a trial is refused by the table's key, not by a check that could race.
"""

import json
import random
import secrets
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conditions (name TEXT PRIMARY KEY, position INTEGER NOT NULL, source TEXT NOT NULL,
                         role TEXT NOT NULL);
CREATE TABLE stimuli (id TEXT PRIMARY KEY, condition TEXT NOT NULL REFERENCES conditions(name),
                      item INTEGER NOT NULL, file TEXT NOT NULL, loudness_lufs REAL,
                      gain_db REAL NOT NULL);
CREATE TABLE trials (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, stimuli TEXT NOT NULL);
CREATE TABLE raters (id TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE deals (rater TEXT NOT NULL REFERENCES raters(id), position INTEGER NOT NULL,
                    trial INTEGER NOT NULL REFERENCES trials(id), stimuli TEXT NOT NULL,
                    PRIMARY KEY (rater, position), UNIQUE (rater, trial));
CREATE TABLE answers (rater TEXT NOT NULL, trial INTEGER NOT NULL, position INTEGER NOT NULL,
                      stimuli TEXT NOT NULL, choice TEXT, scores TEXT, seconds REAL,
                      plays TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (rater, trial),
                      FOREIGN KEY (rater, trial) REFERENCES deals(rater, trial));
"""


class Store:
    """The test directory's database. A/B trials hold two stimulus ids; MUSHRA trials hold
    the reference's id first, then the stimuli to score."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def connect(self):
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
            yield db

    def create(self, meta: dict, conditions: list[dict], stimuli: list[dict],
               trials: list[list[str]], items: list[int]) -> None:
        with self.connect() as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            db.execute("BEGIN")
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany("INSERT INTO conditions VALUES (?, ?, ?, ?)",
                           [(c["name"], i, c["source"], c["role"])
                            for i, c in enumerate(conditions)])
            db.executemany("INSERT INTO stimuli VALUES (?, ?, ?, ?, ?, ?)",
                           [(s["id"], s["condition"], s["item"], s["file"], s["loudness_lufs"],
                             s["gain_db"]) for s in stimuli])
            db.executemany("INSERT INTO trials (item, stimuli) VALUES (?, ?)",
                           [(item, json.dumps(ids)) for item, ids in zip(items, trials)])
            db.execute("COMMIT")

    def meta(self) -> dict:
        with self.connect() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def conditions(self) -> list[dict]:
        with self.connect() as db:
            return [{"name": n, "source": s, "role": r} for n, s, r in db.execute(
                "SELECT name, source, role FROM conditions ORDER BY position")]

    def stimulus_file(self, stimulus: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT file FROM stimuli WHERE id = ?", (stimulus,)).fetchone()
        return row[0] if row else None

    def new_rater(self, mode: str, items_per_rater: int | None = None) -> str:
        """A rater dealt the trials of `items_per_rater` items (None: all) in a fresh random
        order. Balanced: every pair of conditions gets the same number of a rater's trials,
        the items rotate from rater to rater, and each pair's trials alternate which
        condition plays as A, from a random start."""
        rater = secrets.token_hex(8)
        rng = random.Random(rater)
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the rater's number and deal, one at a time
            k = db.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
            n_items = db.execute("SELECT MAX(item) + 1 FROM trials").fetchone()[0]
            m = n_items if items_per_rater is None else min(items_per_rater, n_items)
            items = {(k * m + j) % n_items for j in range(m)}
            trials = [(t, json.loads(s)) for t, item, s in db.execute(
                "SELECT id, item, stimuli FROM trials ORDER BY id") if item in items]
            condition = dict(db.execute("SELECT id, condition FROM stimuli"))
            rng.shuffle(trials)
            flip, dealt = {}, []
            for position, (trial, ids) in enumerate(trials):
                if mode == "ab":
                    pair = tuple(sorted(condition[i] for i in ids))
                    flip[pair] = not flip.get(pair, rng.random() < 0.5)
                    shown = ids[::-1] if flip[pair] else list(ids)
                else:  # the open reference first, the rest shuffled
                    shown = [ids[0]] + rng.sample(ids[1:], len(ids) - 1)
                dealt.append((rater, position, trial, json.dumps(shown)))
            db.execute("INSERT INTO raters VALUES (?, ?)", (rater, time.time()))
            db.executemany("INSERT INTO deals VALUES (?, ?, ?, ?)", dealt)
            db.execute("COMMIT")
        return rater

    def is_rater(self, rater: str) -> bool:
        with self.connect() as db:
            return db.execute("SELECT 1 FROM raters WHERE id = ?", (rater,)).fetchone() is not None

    def progress(self, rater: str) -> tuple[dict | None, int, int]:
        """The rater's next unanswered trial {trial, position, stimuli} (None when done), the
        number answered and the number dealt."""
        with self.connect() as db:
            total = db.execute("SELECT COUNT(*) FROM deals WHERE rater = ?", (rater,)).fetchone()[0]
            done = db.execute("SELECT COUNT(*) FROM answers WHERE rater = ?",
                              (rater,)).fetchone()[0]
            row = db.execute(
                "SELECT d.trial, d.position, d.stimuli FROM deals d LEFT JOIN answers a ON "
                "a.rater = d.rater AND a.trial = d.trial WHERE d.rater = ? AND a.trial IS NULL "
                "ORDER BY d.position LIMIT 1", (rater,)).fetchone()
        nxt = {"trial": row[0], "position": row[1], "stimuli": json.loads(row[2])} if row else None
        return nxt, done, total

    def dealt(self, rater: str, trial: int) -> list[str] | None:
        """The stimuli of `trial` as dealt to `rater` (None if it was not dealt to them)."""
        with self.connect() as db:
            row = db.execute("SELECT stimuli FROM deals WHERE rater = ? AND trial = ?",
                             (rater, trial)).fetchone()
        return json.loads(row[0]) if row else None

    def answer(self, rater: str, trial: int, choice: str | None, scores: dict | None,
               seconds: float | None, plays: dict) -> bool:
        """Store one answer at once: who, which trial, its stimuli as dealt (A first), the
    chosen stimulus or the scores by stimulus, the seconds taken and the plays per stimulus.
    False if the trial was already answered (nothing changes)."""
        with self.connect() as db:
            position, shown = db.execute(
                "SELECT position, stimuli FROM deals WHERE rater = ? AND trial = ?",
                (rater, trial)).fetchone()
            try:
                db.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (rater, trial, position, shown, choice,
                            json.dumps(scores) if scores is not None else None, seconds,
                            json.dumps(plays), time.time()))
            except sqlite3.IntegrityError:
                return False
        return True

    def answers(self) -> list[dict]:
        """Every answer with its stimuli's conditions: {rater, trial, item, choice (the chosen
        stimulus's condition, None for no preference), scores {condition: score}, seconds,
        plays {condition: count}, conditions [as dealt]}."""
        with self.connect() as db:
            condition = dict(db.execute("SELECT id, condition FROM stimuli"))
            rows = db.execute(
                "SELECT a.rater, a.trial, t.item, a.choice, a.scores, a.seconds, a.plays, "
                "a.stimuli FROM answers a JOIN trials t ON t.id = a.trial "
                "ORDER BY a.at").fetchall()
        out = []
        for rater, trial, item, choice, scores, seconds, plays, shown in rows:
            shown = json.loads(shown)
            out.append({"rater": rater, "trial": trial, "item": item,
                        "choice": condition[choice] if choice else None,
                        "scores": {condition[k]: v for k, v in json.loads(scores).items()}
                        if scores else None,
                        "seconds": seconds,
                        "plays": {condition[k]: v for k, v in json.loads(plays).items()},
                        "conditions": [condition[i] for i in shown]})
        return out
