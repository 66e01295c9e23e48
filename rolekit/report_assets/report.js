(function () {
  "use strict";
  // Everything from the run is untrusted model output: it only ever reaches the page as textContent.
  var data = JSON.parse(document.getElementById("rk-episodes").textContent);
  var eps = data.episodes;
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  var TAGS = {policy_win: "policy won", policy_loss: "policy lost", draw: "no winner", invalid: "invalid move",
              error: "error"};

  function el(tag, cls, kids) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    (kids || []).forEach(function (k) {
      if (k === null || k === undefined) return;
      e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    });
    return e;
  }
  function num(x) {
    return typeof x === "number" ? (x >= 0 ? "+" : "") + x.toFixed(3) : "–";
  }
  function promptText(p) {
    if (typeof p === "string") return p;
    if (Array.isArray(p)) {
      for (var i = p.length - 1; i >= 0; i--) if (p[i] && p[i].role === "user") return content(p[i].content);
      return p.map(function (m) { return content(m && m.content); }).join("\n");
    }
    return "";
  }
  function content(c) { return typeof c === "string" ? c : JSON.stringify(c); }

  // --- game views: boards and cards for the built-in games; unknown games show text only ---
  function lastMatches(text, re) {
    var out = [], m; re.lastIndex = 0;
    while ((m = re.exec(text)) !== null) out.push(m);
    return out;
  }
  function tttBoard(text) {
    var rows = String(text).split("\n").map(function (l) { return l.match(/^\s*(\S)\s*\|\s*(\S)\s*\|\s*(\S)\s*$/); })
      .filter(Boolean).slice(-3);
    if (rows.length < 3) return null;
    var grid = el("div", "ttt");
    rows.forEach(function (r) {
      for (var i = 1; i <= 3; i++) {
        var c = r[i], cls = c === "X" ? "x" : c === "O" ? "o" : "e";
        grid.appendChild(el("div", cls, [c]));
      }
    });
    return grid;
  }
  function card(letter, label) {
    var c = el("div", "card" + (letter ? "" : " hidden"), [letter || "?"]);
    return label ? el("div", "cards", [el("span", "muted", [label]), c]) : c;
  }
  function kuhnTurn(text) {
    var cards = lastMatches(text, /Your card: ([JQK])/g);
    if (!cards.length) return null;
    var box = el("div", "cards", [card(cards[cards.length - 1][1], "your card"), card(null)]);
    var pot = lastMatches(text, /Pot: (\d+) chips/g);
    if (pot.length) box.appendChild(el("span", "muted", ["pot " + pot[pot.length - 1][1]]));
    return box;
  }
  function kuhnEnd(ep) {
    var info = ep.info || {};
    if (!Array.isArray(info.cards)) return null;
    var box = el("div", "cards");
    info.cards.forEach(function (deal, i) {
      if (typeof deal !== "string" || deal.length < 2) return;
      box.appendChild(el("span", "muted", [(info.cards.length > 1 ? "round " + (i + 1) + ": " : "") + "player_0"]));
      box.appendChild(card(deal[0]));
      box.appendChild(el("span", "muted", ["player_1"]));
      box.appendChild(card(deal[1]));
    });
    if (info.chips && typeof info.chips === "object") {
      box.appendChild(el("span", "muted", ["chips " + Object.keys(info.chips).map(function (k) {
        return k + " " + String(info.chips[k]); }).join(", ")]));
    }
    return box;
  }
  function inventory(text) {
    var rows = lastMatches(text, /^\s+(\w+): (\d+) \(value (\d+) each\)/gm);
    if (!rows.length) return null;
    var t = el("table", "inv", [el("tr", null, [el("th", null, ["resource"]), el("th", null, ["units"]),
                                               el("th", null, ["value each"])])]);
    rows.slice(-5).forEach(function (m) {
      t.appendChild(el("tr", null, [el("td", null, [m[1]]), el("td", null, [m[2]]), el("td", null, [m[3]])]));
    });
    return t;
  }
  var VIEWS = {
    tictactoe: {turn: tttBoard,
                end: function (ep) { return ep.info && ep.info.board ? tttBoard(ep.info.board) : null; }},
    kuhn_poker: {turn: kuhnTurn, end: kuhnEnd},
    negotiation: {turn: inventory}
  };
  function view(game, kind, arg) {
    var v = VIEWS[game] && VIEWS[game][kind];
    if (!v) return null;
    try { return v(arg); } catch (e) { return null; }
  }

  // --- the list and its filters ---
  var fGame = document.getElementById("f-game"), fStep = document.getElementById("f-step"),
      fTag = document.getElementById("f-tag"), list = document.getElementById("ep-list"),
      count = document.getElementById("ep-count"), pane = document.getElementById("ep-view");
  function options(select, values) {
    values.forEach(function (v) { var o = el("option", null, [v]); o.value = v; select.appendChild(o); });
  }
  options(fGame, Array.from(new Set(eps.map(function (e) { return String(e.game); }))).sort());
  options(fStep, Array.from(new Set(eps.map(function (e) { return e.step; }))).sort(function (a, b) { return a - b; })
    .map(String));
  function summary(ep) {
    var info = ep.info || {};
    if (ep.error) return "error";
    var s = info.winner ? info.winner + " won" : "no winner";
    if (info.invalid) s += ", " + info.invalid + " moved illegally";
    return s;
  }
  var current = -1;
  function refill() {
    list.textContent = "";
    var shown = 0;
    eps.forEach(function (ep, i) {
      if (fGame.value && String(ep.game) !== fGame.value) return;
      if (fStep.value && String(ep.step) !== fStep.value) return;
      if (fTag.value && (ep.tags || []).indexOf(fTag.value) < 0) return;
      var b = el("button", null, [el("b", null, ["step " + ep.step]), " · " + ep.game + " · " + summary(ep)]);
      b.dataset.index = i;
      if (i === current) b.className = "on";
      b.addEventListener("click", function () { location.hash = "episode-" + i; show(i); });
      list.appendChild(el("li", null, [b]));
      shown++;
    });
    count.textContent = shown + " of " + eps.length + " episodes";
  }
  [fGame, fStep, fTag].forEach(function (s) { s.addEventListener("change", refill); });

  // --- one episode, seat by seat ---
  function show(i) {
    var ep = eps[i];
    if (!ep) return;
    current = i;
    Array.prototype.forEach.call(list.querySelectorAll("button"), function (b) {
      b.classList.toggle("on", Number(b.dataset.index) === i);
    });
    pane.textContent = "";
    pane.appendChild(el("h3", null, [ep.game + " · step " + ep.step + " · seed " + ep.seed]));
    var roles = Object.keys(ep.seats || {});
    (ep.turns || []).forEach(function (t) { if (roles.indexOf(t.role) < 0) roles.push(t.role); });
    var color = {};
    roles.forEach(function (r, k) { color[r] = COLORS[k % COLORS.length]; });
    var seatTable = el("table", "num", [el("tr", null, [el("th", null, ["seat"]), el("th", null, ["played by"]),
                                                       el("th", null, ["return"])])]);
    roles.forEach(function (r) {
      seatTable.appendChild(el("tr", null, [el("td", null, [r]), el("td", null, [(ep.seats || {})[r] || "–"]),
                                            el("td", null, [num((ep.returns || {})[r])])]));
    });
    var final = el("div", "final", [seatTable]);
    var endView = view(ep.game, "end", ep);
    if (endView) final.appendChild(endView);
    var facts = el("table", null);
    Object.keys(ep.info || {}).forEach(function (k) {
      var v = ep.info[k];
      facts.appendChild(el("tr", null, [el("th", null, [k]),
        el("td", null, [typeof v === "string" && v.indexOf("\n") >= 0 ? el("pre", null, [v]) :
                        el("span", null, [typeof v === "string" ? v : JSON.stringify(v)])])]));
    });
    (ep.tags || []).forEach(function (t) { final.appendChild(el("span", "tag " + t, [TAGS[t] || t])); });
    pane.appendChild(final);
    if (facts.childNodes.length) pane.appendChild(facts);
    if (ep.error) pane.appendChild(el("pre", "answer", ["error: " + ep.error]));

    var seatBar = el("div", "seats");
    var turns = el("div");
    ["all seats"].concat(roles).forEach(function (r, k) {
      var b = el("button", k === 0 ? "on" : null, [r]);
      b.addEventListener("click", function () {
        Array.prototype.forEach.call(seatBar.children, function (x) { x.classList.toggle("on", x === b); });
        Array.prototype.forEach.call(turns.children, function (node) {
          node.style.display = k === 0 || node.dataset.role === r ? "" : "none";
        });
      });
      seatBar.appendChild(b);
    });
    pane.appendChild(seatBar);
    (ep.turns || []).forEach(function (t, k) {
      var box = el("div", "turn");
      box.dataset.role = t.role;
      box.style.setProperty("--c", color[t.role] || "#94a3b8");
      box.appendChild(el("div", "head", [
        el("b", null, ["#" + (k + 1) + " " + t.role]), el("span", "muted", [t.responder || ""]),
        el("span", "kv", ["action ", el("strong", null, [t.action === null || t.action === undefined ?
                                                          "none (invalid)" : String(t.action)])]),
        el("span", "kv", ["reward ", el("strong", null, [num(t.reward)])]),
        el("span", "kv", ["advantage ", el("strong", null, [num(t.advantage)])]),
        el("span", "kv", ["tokens ", el("strong", null, [t.tokens === undefined ? "–" : String(t.tokens)])])
      ]));
      box.appendChild(el("div", "label", ["saw"]));
      var saw = el("div", "saw");
      var v = view(ep.game, "turn", promptText(t.prompt));
      if (v) saw.appendChild(v);
      var pre = el("pre", "prompt");
      if (Array.isArray(t.prompt)) {
        t.prompt.forEach(function (m) {
          pre.appendChild(el("span", "msg-role", [(m && m.role) + ": "]));
          pre.appendChild(document.createTextNode(content(m && m.content) + "\n"));
        });
      } else {
        pre.textContent = typeof t.prompt === "string" ? t.prompt : JSON.stringify(t.prompt);
      }
      saw.appendChild(pre);
      box.appendChild(saw);
      box.appendChild(el("div", "label", ["answered"]));
      box.appendChild(el("pre", "answer", [t.text === null || t.text === undefined ? "" : String(t.text)]));
      turns.appendChild(box);
    });
    pane.appendChild(turns);
  }

  refill();
  var m = location.hash.match(/^#episode-(\d+)$/);
  if (m) show(Number(m[1]));
  window.rolekitReady = performance.now();
})();
