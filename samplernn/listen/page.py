"""The rater's pages (Jinja templates, autoescaped by Flask): one trial per page, all CSS and
script inline, nothing loaded from another site. No condition name ever reaches them: the
players are lettered (A/B) or numbered (MUSHRA) and their sources are opaque stimulus ids.

A/B: two players, a button per choice (data-choice="A", "B", and "none" when ties are
allowed). MUSHRA: the open reference (R) and a player and a 0-100 slider per stimulus, and a
Submit button. Keys: 1, 2, ... play a stimulus (r the reference); in A/B the left and right
arrows choose A and B, the down arrow no preference.
"""

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Listening test</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
.players { display: flex; gap: 2rem; flex-wrap: wrap; margin: 1.5rem 0; }
.player { flex: 1; min-width: 14rem; }
.player h2 { margin: 0 0 .4rem; font-size: 1.2rem; }
.choices { display: flex; gap: 1rem; }
button { font-size: 1.1rem; padding: .6rem 1.4rem; cursor: pointer; }
.row { display: grid; grid-template-columns: 2.5rem 1fr 14rem 3rem; gap: .8rem;
       align-items: center; margin: .6rem 0; }
input[type=range] { width: 100%; }
#status { color: #a00; min-height: 1.4em; }
.hint { color: #666; font-size: .9rem; }
</style></head><body>
"""

PAGE = _HEAD + """<h1>Listening test</h1>
<p id="progress">trial {{ k }} of {{ n }}</p>
{% if mode == "ab" %}
<p>Listen to both, then choose the one you prefer.</p>
<div class="players">
{% for key, sid in players %}
<div class="player"><h2>{{ key }}</h2>
<audio controls preload="auto" data-key="{{ key }}" src="{{ stimulus }}{{ sid }}.wav"></audio></div>
{% endfor %}
</div>
<div class="choices">
<button data-choice="A">A is better</button>
{% if allow_tie %}<button data-choice="none">No preference</button>{% endif %}
<button data-choice="B">B is better</button>
</div>
<p class="hint">Keys: 1 and 2 play A and B; left arrow chooses A, right arrow B{% if allow_tie
%}, down arrow no preference{% endif %}.</p>
{% else %}
<p>Score each stimulus against the reference, from 0 (bad) to 100 (excellent). One of them is
the reference itself.</p>
<div class="row"><strong>R</strong>
<audio controls preload="auto" data-key="R" src="{{ stimulus }}{{ players[0][1] }}.wav"></audio>
<span>reference</span><span></span></div>
{% for key, sid in players[1:] %}
<div class="row"><strong>{{ key }}</strong>
<audio controls preload="auto" data-key="{{ key }}" src="{{ stimulus }}{{ sid }}.wav"></audio>
<input type="range" min="0" max="100" step="1" value="50" data-stimulus="{{ key }}"
 aria-label="score of {{ key }}">
<output data-for="{{ key }}">50</output></div>
{% endfor %}
<button id="submit" data-choice="submit">Submit</button>
<p class="hint">Keys: r plays the reference, 1 to {{ players|length - 1 }} the stimuli.</p>
{% endif %}
<p id="status" role="status"></p>
<script>
(function () {
  const trial = {{ trial }}, answerUrl = {{ answer|tojson }}, started = performance.now();
  const plays = {}, players = {};
  document.querySelectorAll("audio").forEach(a => {
    players[a.dataset.key] = a; plays[a.dataset.key] = 0;
    a.addEventListener("play", () => {
      plays[a.dataset.key] += 1;
      document.querySelectorAll("audio").forEach(o => { if (o !== a) o.pause(); });
    });
  });
  document.querySelectorAll("input[type=range]").forEach(s => s.addEventListener("input", () => {
    document.querySelector(`output[data-for="${s.dataset.stimulus}"]`).value = s.value;
  }));
  let sent = false;
  async function send(extra) {
    if (sent) return;
    sent = true;
    document.querySelectorAll("button").forEach(b => b.disabled = true);
    const body = Object.assign({trial: trial, plays: plays,
                                seconds: (performance.now() - started) / 1000}, extra);
    try {
      const r = await fetch(answerUrl, {method: "POST", body: JSON.stringify(body),
                                        headers: {"Content-Type": "application/json"}});
      if (r.ok || r.status === 409) { location.reload(); return; }
      const why = await r.json().catch(() => ({error: r.statusText}));
      document.getElementById("status").textContent = "Not saved: " + why.error;
    } catch (e) {
      document.getElementById("status").textContent = "Not saved (is the server running?)";
    }
    sent = false;
    document.querySelectorAll("button").forEach(b => b.disabled = false);
  }
  document.querySelectorAll("button[data-choice]").forEach(b => b.addEventListener("click", () => {
    if (b.dataset.choice === "submit") {
      const scores = {};
      document.querySelectorAll("input[type=range]").forEach(s => {
        scores[s.dataset.stimulus] = Number(s.value); });
      send({scores: scores});
    } else {
      send({choice: b.dataset.choice});
    }
  }));
  function play(key) { const a = players[key]; if (a) { a.currentTime = 0; a.play(); } }
  document.addEventListener("keydown", e => {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "r" || e.key === "R") { play("R"); return; }
    if (/^[1-9]$/.test(e.key)) {
      play({{ 'true' if mode == 'ab' else 'false' }} ? "AB"[Number(e.key) - 1] : e.key);
      return;
    }
    const pick = {ArrowLeft: "A", ArrowRight: "B", ArrowDown: "none"}[e.key];
    const button = pick && document.querySelector(`button[data-choice="${pick}"]`);
    if (button) { e.preventDefault(); button.click(); }
  });
})();
</script>
</body></html>
"""

THANKS = _HEAD + """<h1>Thank you</h1>
<p id="progress">All {{ total }} trials are done. You can close this page.</p>
</body></html>
"""
