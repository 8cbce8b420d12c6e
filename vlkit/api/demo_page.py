"""The demo's one HTML page (plain HTML, CSS and fetch calls; no external assets)."""
from __future__ import annotations

import html
from typing import Any

from vlkit.api.demo import size_text

STYLE = """
body { font-family: sans-serif; max-width: 860px; margin: 2em auto; color: #222; }
section { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em; margin: 1em 0; }
.answer { display: flex; align-items: center; gap: 0.6em; margin: 0.2em 0; }
.answer .label { width: 12em; }
.answer .bar { height: 0.9em; background: #4a7bd0; }
.error { color: #b00020; }
img.picture { max-width: 100%; }
#preview { max-height: 200px; }
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
function form(fields) {
  const data = new FormData();
  const file = $("image").files[0];
  if (file) data.append("image", file);
  for (const [key, value] of Object.entries(fields)) data.append(key, value);
  return data;
}
async function post(url, fields, target) {
  $(target).innerHTML = "<em>working...</em>";
  const response = await fetch(url, {method: "POST", body: form(fields)});
  const body = await response.json();
  if (!response.ok) {
    const error = body.error || JSON.stringify(body.detail || body);
    $(target).innerHTML = '<p class="error"></p>';
    $(target).firstChild.textContent = error;
    return null;
  }
  return body;
}
function bars(target, rows) {
  $(target).innerHTML = "";
  for (const row of rows) {
    const line = document.createElement("div");
    line.className = "answer";
    line.innerHTML = '<span class="label"></span><div class="bar"></div><span class="score"></span>';
    line.children[0].textContent = row.label;
    line.children[1].style.width = Math.round(300 * row.value) + "px";
    line.children[2].textContent = row.value.toFixed(3);
    $(target).appendChild(line);
  }
  $(target).dataset.done = "1";
}
$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  if (file) $("preview").src = URL.createObjectURL(file);
});
async function ask() {
  const body = await post("/api/vqa", {question: $("question").value}, "answers");
  if (body) bars("answers", body.answers.map((a) => ({label: a.answer, value: a.score})));
}
async function score() {
  const body = await post("/api/match", {captions: $("captions").value}, "scores");
  if (body) bars("scores", body.captions.map((c) => ({label: c.caption, value: c.itm})));
}
async function picture(kind) {
  const body = await post("/api/picture/" + kind, {text: $(kind + "_text").value}, kind + "_out");
  if (body) $(kind + "_out").innerHTML = '<img class="picture" src="' + body.png + '">';
}
"""


def _section(enabled: bool, title: str, body: str, reason: str) -> str:
    if not enabled:
        return f"<section><h3>{title}</h3><p><em>{html.escape(reason)}</em></p></section>"
    return f"<section><h3>{title}</h3>{body}</section>"


def _picture_form(kind: str) -> str:
    """A text box and a button that draws the ``kind`` picture (``elip`` or ``align``) for it."""
    return (f'<input id="{kind}_text" size="50" value="a red circle"> '
            f'<button id="{kind}" onclick="picture(\'{kind}\')">Show</button><div id="{kind}_out"></div>')


def page(model: Any, capabilities: dict[str, bool], max_upload_bytes: int) -> str:
    """The page for ``model``; sections for what it cannot do say why."""
    name = html.escape(f"{model.cfg.exp_name} ({model.cfg.model})")
    sections = [
        _section(capabilities["vqa"], "Ask a question",
                 '<input id="question" size="50" value="what colour is the shape?"> '
                 '<button id="ask" onclick="ask()">Ask</button><div id="answers"></div>',
                 "this model has no VQA head (fine-tune it on VQAv2)"),
        _section(capabilities["match"], "Score captions (one per line)",
                 '<textarea id="captions" rows="3" cols="50">a red circle\na blue square</textarea><br>'
                 '<button id="score" onclick="score()">Score</button><div id="scores"></div>',
                 "this model has no ITM head (pre-train it with loss_names.itm=1)"),
        _section(capabilities["elip"], "ELIP: which patches are kept",
                 _picture_form("elip"),
                 "this model prunes no image tokens (train it with an ELIP preset)"),
        _section(capabilities["align"], "Word-to-patch alignment",
                 _picture_form("align"),
                 "alignment maps are drawn for single-stream models (VLC / ViLT)"),
    ]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vlkit demo: {name}</title><style>{STYLE}</style></head>
<body>
<h2>vlkit demo: {name}</h2>
<section><h3>Image</h3><input type="file" id="image" accept="image/*">
<small>(at most {size_text(max_upload_bytes)})</small><br><img id="preview" alt=""></section>
{''.join(sections)}
<script>{SCRIPT}</script>
</body></html>"""
