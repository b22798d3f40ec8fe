"""The listening test's web server: Flask (routing, JSON, cookies, file responses; the
best-known small Python web framework) served by waitress (a pure-Python production WSGI
server with a thread pool, so many raters at once need no extra process).

Small and shut: every route sits under /t/<token>/ (the token is the test's, printed by
`serve`); anything else answers 403. Stimuli are served by their opaque id only, looked up
in the database; no path from a request ever reaches the file system. Each answer is checked
and committed before the reply; a refused one changes nothing.

    /t/<token>/                 a new rater (or the one this browser already is) -> their page
    /t/<token>/r/<rater>/       the rater's next trial, or the thank-you page
    /t/<token>/r/<rater>/answer POST one answer (JSON)
    /t/<token>/s/<id>.wav       a stimulus
"""

import math
import re
import secrets
from pathlib import Path

from flask import Flask, abort, jsonify, redirect, render_template_string, request, send_file

from .page import PAGE, THANKS
from .store import Store

MAX_BODY_BYTES = 16 * 1024
_ID = re.compile(r"[0-9a-f]{16}")


def make_app(test_dir: Path) -> Flask:
    test_dir = Path(test_dir).resolve()
    store = Store(test_dir / "listen.db")
    meta = store.meta()
    token, mode = meta["token"], meta["mode"]
    prefix = f"/t/{token}/"
    cookie = f"rater_{token[:6]}"
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["LISTEN_TOKEN"] = token

    @app.before_request
    def token_or_403():
        if not secrets.compare_digest(request.path[:len(prefix)].encode(), prefix.encode()):
            abort(403, "this address needs the test's token: open the address that "
                       "samplernn-listen serve printed")

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(409)
    @app.errorhandler(413)
    @app.errorhandler(422)
    def error(e):
        return jsonify(error=e.description if isinstance(e.description, str) else e.name), e.code

    @app.get("/t/<token_>/")
    def start(token_):
        rater = request.cookies.get(cookie, "")
        if not (_ID.fullmatch(rater) and store.is_rater(rater)):
            rater = store.new_rater(mode, meta.get("items_per_rater"))
        reply = redirect(f"{prefix}r/{rater}/")
        reply.set_cookie(cookie, rater, max_age=90 * 24 * 3600, samesite="Strict",
                         path=prefix, httponly=True)
        return reply

    def _rater(rater: str) -> str:
        if not (_ID.fullmatch(rater) and store.is_rater(rater)):
            abort(404, "no such rater; start again from the test's address")
        return rater

    @app.get("/t/<token_>/r/<rater>/")
    def trial_page(token_, rater):
        rater = _rater(rater)
        nxt, done, total = store.progress(rater)
        if nxt is None:
            return render_template_string(THANKS, total=total)
        ids = nxt["stimuli"]
        if mode == "ab":
            players = list(zip("AB", ids))
        else:  # the open reference, then the stimuli to score, numbered
            players = [("R", ids[0])] + [(str(i), s) for i, s in enumerate(ids[1:], 1)]
        return render_template_string(PAGE, mode=mode, trial=nxt["trial"], k=done + 1,
                                      n=total, players=players, allow_tie=meta["allow_tie"],
                                      answer=f"{prefix}r/{rater}/answer",
                                      stimulus=f"{prefix}s/")

    @app.get("/t/<token_>/s/<name>")
    def stimulus(token_, name):
        sid = name.removesuffix(".wav")
        file = store.stimulus_file(sid) if _ID.fullmatch(sid) and name.endswith(".wav") else None
        if file is None:
            abort(404, "no such stimulus")
        path = (test_dir / file).resolve()
        if not path.is_relative_to(test_dir / "stimuli") or not path.is_file():
            abort(404, "no such stimulus")
        return send_file(path, mimetype="audio/wav", download_name="stimulus.wav",
                         max_age=3600)

    @app.post("/t/<token_>/r/<rater>/answer")
    def answer(token_, rater):
        rater = _rater(rater)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, "the body must be a JSON object")
        trial = body.get("trial")
        if not isinstance(trial, int) or isinstance(trial, bool):
            abort(400, "trial must be an integer")
        shown = store.dealt(rater, trial)
        if shown is None:
            abort(404, f"trial {trial} was not dealt to this rater")
        keys = list("AB") if mode == "ab" else ["R"] + [str(i) for i in range(1, len(shown))]
        by_key = dict(zip(keys, shown))
        choice, scores = None, None
        if mode == "ab":
            allowed = ["A", "B"] + (["none"] if meta["allow_tie"] else [])
            if body.get("choice") not in allowed:
                abort(422, f"choice must be one of {', '.join(allowed)}")
            choice = by_key.get(body["choice"])
        else:
            scores = _scores(body.get("scores"), keys[1:])
            scores = {by_key[k]: v for k, v in scores.items()}
        plays = _plays(body.get("plays", {}), keys)
        seconds = body.get("seconds")
        if seconds is not None and not (_number(seconds) and 0 <= seconds < 1e6):
            abort(422, "seconds must be a number of seconds >= 0")
        if not store.answer(rater, trial, choice, scores, seconds,
                            {by_key[k]: n for k, n in plays.items()}):
            abort(409, f"trial {trial} is already answered")
        nxt, done, total = store.progress(rater)
        return jsonify(stored=True, done=done, total=total), 201

    return app


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _scores(scores, keys: list[str]) -> dict:
    if not isinstance(scores, dict) or sorted(scores) != sorted(keys):
        abort(422, f"scores must give every stimulus ({', '.join(keys)}) a score")
    if not all(_number(v) and 0 <= v <= 100 for v in scores.values()):
        abort(422, "every score must be a number from 0 to 100")
    return {k: float(v) for k, v in scores.items()}


def _plays(plays, keys: list[str]) -> dict:
    if not isinstance(plays, dict) or not set(plays) <= set(keys) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000
            for v in plays.values()):
        abort(422, f"plays must count plays per player ({', '.join(keys)})")
    return plays


def serve(test_dir: Path, host: str = "127.0.0.1", port: int = 8765, threads: int = 16,
          announce=print) -> None:
    """Serve the test until Ctrl-C or a signal; prints the address raters open."""
    from waitress import create_server
    app = make_app(test_dir)
    server = create_server(app, host=host, port=port, threads=threads)
    everywhere = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if everywhere else host
    token = app.config["LISTEN_TOKEN"]
    lan = "; raters on the LAN: this machine's address in place of 127.0.0.1" if everywhere else ""
    announce(f"listening test {Path(test_dir).name}: open http://{shown}:{server.effective_port}"
             f"/t/{token}/ (one browser per rater{lan}; Ctrl-C stops, answers are kept)",
             flush=True)
    try:
        server.run()
    finally:
        server.close()
