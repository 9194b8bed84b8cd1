/**
 * The dashboard's one page: HTML, CSS and a small script that draws SVG from the server-sent events of
 * /events (observe/feed.ts has the message shapes). Nothing is loaded from elsewhere. The script avoids
 * template literals: it lives inside one here.
 */

const STYLE = `
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 12px; padding: 10px 16px; background: #111827; color: #f9fafb; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
#status { font-size: 12px; padding: 1px 8px; border-radius: 9px; background: #374151; }
#status.live { background: #15803d; } #status.ended { background: #1d4ed8; } #status.lost { background: #b91c1c; }
main { padding: 12px 16px; display: grid; gap: 12px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
h2 { font-size: 13px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
#stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 8px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
.stat b { display: block; font-size: 18px; font-variant-numeric: tabular-nums; }
.stat span { color: var(--muted); font-size: 11px; }
.stat.bad b { color: #b91c1c; }
svg { width: 100%; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.lane-bg { fill: #f3f4f6; }
.lane.spare .lane-bg { fill: none; stroke: #cbd5e1; stroke-dasharray: 4 3; }
.bar.ok { fill: #3b82f6; } .bar.error { fill: #dc2626; } .bar.crash { fill: #7f1d1d; } .bar.breach { fill: #9333ea; }
.bar.timeout { fill: #d97706; } .bar.aborted, .bar.cancelled { fill: #9ca3af; }
.marker line { stroke-width: 2; } .marker text { font-weight: 600; }
.marker.breach line { stroke: #9333ea; } .marker.breach text { fill: #9333ea; }
.marker.recycle line { stroke: #0891b2; stroke-dasharray: 3 2; } .marker.recycle text { fill: #0891b2; }
.marker.crash line { stroke: #7f1d1d; } .marker.crash text { fill: #7f1d1d; }
.grid { stroke: var(--line); }
.mem { fill: none; stroke-width: 1.8; } .mem.heap { stroke-width: 1.2; stroke-dasharray: 4 3; }
.mem.proc { stroke: #6b7280; stroke-width: 1.2; }
.limit { stroke-width: 1.5; stroke-dasharray: 6 4; } .limit.heap { stroke: #dc2626; } .limit.rss { stroke: #9333ea; }
.limit.budget { stroke: #d97706; }
.rate { fill: rgba(59,130,246,.15); stroke: #3b82f6; stroke-width: 1.5; }
.legend { display: flex; flex-wrap: wrap; gap: 12px; color: var(--muted); font-size: 11px; margin-top: 4px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
#events { list-style: none; margin: 0; padding: 0; max-height: 180px; overflow: auto; font-size: 12px; }
#events li { padding: 2px 0; border-bottom: 1px solid var(--line); }
#events .kind { display: inline-block; min-width: 58px; font-weight: 600; }
#events .breach .kind { color: #9333ea; } #events .crash .kind { color: #7f1d1d; } #events .recycle .kind { color: #0891b2; }
#events time { color: var(--muted); margin-right: 8px; font-variant-numeric: tabular-nums; }
`;

const SCRIPT = `
(function () {
  'use strict';
  var WINDOW_MS = 30000, MEM_WINDOW_MS = 300000, RATE_WINDOW_MS = 120000;
  var PALETTE = ['#2563eb', '#16a34a', '#ea580c', '#9333ea', '#0891b2', '#db2777', '#65a30d', '#b45309'];
  var st = { init: null, bars: [], mem: {}, proc: [], rate: [], events: [], workers: [], stats: null, now: 0, ended: false };
  function $(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; });
  }
  function color(id) { return PALETTE[id % PALETTE.length]; }
  function bytes(n) {
    if (n === null || n === undefined) return '-';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
  }
  function count(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 1 : 2) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(Math.round(n));
  }
  function dur(s) {
    if (s === null || s === undefined) return '-';
    if (s < 1) return '< 1s';
    if (s < 90) return Math.round(s) + 's';
    if (s < 5400) return Math.floor(s / 60) + 'm ' + Math.round(s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.round((s % 3600) / 60) + 'm';
  }
  function clock(t) {
    var d = new Date(st.init.wallOrigin + t);
    return d.toTimeString().slice(0, 8);
  }
  function setStatus(text, cls) { var s = $('status'); s.textContent = text; s.className = cls; }

  function addMem(id, t, rss, heap) {
    var a = st.mem[id] || (st.mem[id] = []);
    if (a.length && a[a.length - 1][0] >= t) return;
    a.push([t, rss, heap]);
  }
  function reset(d) {
    st.init = d;
    st.bars = d.bars.slice();
    st.events = d.events.slice(-200);
    st.mem = {};
    st.proc = [];
    st.rate = [];
    d.series.forEach(function (s) { s.workers.forEach(function (w) { addMem(w[0], s.t, w[1], w[2]); }); });
    document.title = d.title + ' - corral';
    $('title').textContent = d.title;
  }
  function tick(d) {
    st.now = d.t;
    for (var i = 0; i < d.bars.length; i++) st.bars.push(d.bars[i]);
    var cut = d.t - WINDOW_MS, k = 0;
    while (k < st.bars.length && st.bars[k][2] < cut) k++;
    if (k) st.bars.splice(0, k);
    d.mem.forEach(function (m) { addMem(m[0], d.t, m[1], m[2]); });
    st.proc.push([d.t, d.procRss]);
    var memCut = d.t - MEM_WINDOW_MS;
    Object.keys(st.mem).forEach(function (id) {
      var a = st.mem[id];
      while (a.length && a[0][0] < memCut) a.shift();
      if (!a.length) delete st.mem[id];
    });
    while (st.proc.length && st.proc[0][0] < memCut) st.proc.shift();
    st.rate.push([d.t, d.stats.rate]);
    while (st.rate.length && st.rate[0][0] < d.t - RATE_WINDOW_MS) st.rate.shift();
    st.events = st.events.concat(d.events).slice(-200);
    st.workers = d.workers;
    st.stats = d.stats;
    st.ended = d.ended;
  }

  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  }

  function laneIds() {
    var seen = {};
    st.workers.forEach(function (w) { seen[w[0]] = true; });
    st.bars.forEach(function (b) { seen[b[0]] = true; });
    st.events.forEach(function (e) { if (e.t >= st.now - WINDOW_MS && e.kind !== 'start') seen[e.workerId] = true; });
    return Object.keys(seen).map(Number).sort(function (a, b) { return a - b; });
  }
  function worker(id) {
    for (var i = 0; i < st.workers.length; i++) if (st.workers[i][0] === id) return st.workers[i];
    return null;
  }
  function state(id) {
    var w = worker(id);
    return w ? w[1] : 'exited';
  }
  // The warm spare: started ahead of need after a death, it runs nothing until it takes a dead
  // worker's place. Its lane says so, rather than look like a worker that gets no work.
  function isSpare(id) {
    var w = worker(id);
    return !!(w && w[3]);
  }

  function drawStream() {
    var svg = $('stream'), W = svg.clientWidth || 900, LEFT = 86, TOP = 16, LANE = 24;
    var ids = laneIds(), from = st.now - WINDOW_MS;
    var H = TOP + ids.length * LANE + 4;
    var x = function (t) { return LEFT + ((t - from) / WINDOW_MS) * (W - LEFT - 8); };
    var out = [];
    for (var s = 0; s <= WINDOW_MS; s += 5000) {
      var gx = x(from + s).toFixed(1);
      out.push('<line class="grid" x1="' + gx + '" x2="' + gx + '" y1="' + TOP + '" y2="' + H + '"/>');
      out.push('<text x="' + gx + '" y="11" text-anchor="middle">' + (s === WINDOW_MS ? 'now' : '-' + (WINDOW_MS - s) / 1000 + 's') + '</text>');
    }
    var byLane = {};
    st.bars.forEach(function (b) { (byLane[b[0]] || (byLane[b[0]] = [])).push(b); });
    ids.forEach(function (id, row) {
      var y = TOP + row * LANE;
      var spare = isSpare(id);
      out.push('<g class="lane' + (spare ? ' spare' : '') + '" data-worker="' + id + '">');
      out.push('<rect class="lane-bg" x="' + LEFT + '" y="' + (y + 2) + '" width="' + (W - LEFT - 8) + '" height="' + (LANE - 4) + '"/>');
      out.push('<text x="4" y="' + (y + LANE / 2 + 4) + '">worker ' + id + ' <tspan font-size="10">' + esc(spare ? 'spare' : state(id)) + '</tspan>' +
        (spare ? '<title>warm spare: runs no work until it takes the place of a worker that ends</title>' : '') + '</text>');
      var bars = byLane[id] || [];
      // Failures after successes, so that they are drawn on top.
      bars.slice().sort(function (a, b) { return a[5] - b[5]; }).forEach(function (b) {
        if (b[2] < from) return;
        var x0 = Math.max(LEFT, x(b[1])), w = Math.max(b[5] ? 2.5 : 1.2, x(b[2]) - x0);
        var cls = b[5] ? b[6] : 'ok';
        out.push('<rect class="bar ' + cls + '" x="' + x0.toFixed(1) + '" y="' + (y + 4) + '" width="' + w.toFixed(1) + '" height="' + (LANE - 8) + '">' +
          '<title>' + esc(b[7]) + ': ' + b[3] + ' unit(s), ' + b[4] + ' item(s)' + (b[5] ? ', ' + b[5] + ' failed (' + esc(b[6]) + ')' : '') +
          ', ' + ((b[2] - b[1]) < 1 ? (b[2] - b[1]).toFixed(2) : Math.round(b[2] - b[1])) + ' ms</title></rect>');
      });
      st.events.forEach(function (e) {
        if (e.workerId !== id || e.t < from || (e.kind !== 'breach' && e.kind !== 'recycle' && e.kind !== 'crash')) return;
        var mx = x(e.t).toFixed(1);
        out.push('<g class="marker ' + e.kind + '" data-worker="' + id + '"><line x1="' + mx + '" x2="' + mx + '" y1="' + y + '" y2="' + (y + LANE) + '"/>' +
          '<text x="' + (Number(mx) + 3) + '" y="' + (y + (e.kind === 'breach' ? 11 : LANE - 3)) + '">' + e.kind + '</text><title>' + esc(e.text) + '</title></g>');
      });
      out.push('</g>');
    });
    svg.setAttribute('height', String(H));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.innerHTML = out.join('');
  }

  function path(points, x, y) {
    var d = '';
    points.forEach(function (p) {
      if (p[1] === null || p[1] === undefined) return;
      d += (d ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1);
    });
    return d;
  }

  function drawMemory() {
    var svg = $('memory'), W = svg.clientWidth || 900, H = 220, LEFT = 70, TOP = 10, BOTTOM = 20;
    var ids = Object.keys(st.mem).map(Number).sort(function (a, b) { return a - b; });
    var oldest = st.now;
    ids.forEach(function (id) { oldest = Math.min(oldest, st.mem[id][0][0]); });
    var from = Math.max(oldest, st.now - MEM_WINDOW_MS), span = Math.max(30000, st.now - from);
    from = st.now - span;
    var lim = st.init.limits, max = 0, anyRss = false;
    ids.forEach(function (id) { st.mem[id].forEach(function (p) { if (p[1] !== null) { anyRss = true; max = Math.max(max, p[1]); } max = Math.max(max, p[2]); }); });
    if (!anyRss) st.proc.forEach(function (p) { max = Math.max(max, p[1]); });
    [lim.heap, lim.rss].forEach(function (l) { if (l) max = Math.max(max, l); });
    max = max * 1.1 || 1;
    var x = function (t) { return LEFT + ((t - from) / span) * (W - LEFT - 8); };
    var y = function (v) { return TOP + (1 - v / max) * (H - TOP - BOTTOM); };
    var out = [];
    for (var i = 0; i <= 4; i++) {
      var v = (max / 1.1) * (i / 4), gy = y(v).toFixed(1);
      out.push('<line class="grid" x1="' + LEFT + '" x2="' + (W - 8) + '" y1="' + gy + '" y2="' + gy + '"/><text x="' + (LEFT - 6) + '" y="' + (Number(gy) + 4) + '" text-anchor="end">' + bytes(v) + '</text>');
    }
    out.push('<text x="' + LEFT + '" y="' + (H - 4) + '">-' + Math.round(span / 1000) + 's</text><text x="' + (W - 8) + '" y="' + (H - 4) + '" text-anchor="end">now</text>');
    [['heap', lim.heap], ['rss', lim.rss]].forEach(function (l) {
      if (!l[1]) return;
      var ly = y(l[1]).toFixed(1);
      out.push('<line class="limit ' + l[0] + '" x1="' + LEFT + '" x2="' + (W - 8) + '" y1="' + ly + '" y2="' + ly + '"/><text x="' + (W - 12) + '" y="' + (Number(ly) - 4) + '" text-anchor="end">' + l[0] + ' limit ' + bytes(l[1]) + '</text>');
    });
    if (!anyRss && st.proc.length) out.push('<path class="mem proc" d="' + path(st.proc, x, y) + '"><title>pool process RSS (thread workers live in it)</title></path>');
    ids.forEach(function (id) {
      var pts = st.mem[id], c = color(id);
      if (anyRss) out.push('<path class="mem rss" data-worker="' + id + '" stroke="' + c + '" d="' + path(pts.map(function (p) { return [p[0], p[1]]; }), x, y) + '"><title>worker ' + id + ' RSS</title></path>');
      out.push('<path class="mem heap" data-worker="' + id + '" stroke="' + c + '" d="' + path(pts.map(function (p) { return [p[0], p[2]]; }), x, y) + '"><title>worker ' + id + ' heap used</title></path>');
    });
    st.events.forEach(function (e) {
      if (e.kind !== 'breach' || e.t < from) return;
      var mx = x(e.t).toFixed(1);
      out.push('<g class="marker breach" data-worker="' + e.workerId + '"><line x1="' + mx + '" x2="' + mx + '" y1="' + TOP + '" y2="' + (H - BOTTOM) + '"/><text x="' + (Number(mx) + 3) + '" y="' + (TOP + 12) + '">breach w' + e.workerId + '</text><title>' + esc(e.text) + '</title></g>');
    });
    svg.setAttribute('height', String(H));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.innerHTML = out.join('');
    $('memory-legend').innerHTML = ids.map(function (id) {
      return '<span><i style="background:' + color(id) + '"></i>worker ' + id + '</span>';
    }).join('') + '<span>solid: RSS, dashed: V8 heap used</span>';
  }

  function drawRate() {
    var svg = $('rate'), W = svg.clientWidth || 900, H = 80, LEFT = 70;
    var from = st.now - RATE_WINDOW_MS, max = 1;
    st.rate.forEach(function (p) { max = Math.max(max, p[1]); });
    max *= 1.15;
    var x = function (t) { return LEFT + ((t - from) / RATE_WINDOW_MS) * (W - LEFT - 8); };
    var y = function (v) { return 6 + (1 - v / max) * (H - 12); };
    var d = path(st.rate, x, y);
    var out = ['<text x="' + (LEFT - 6) + '" y="14" text-anchor="end">' + count(max / 1.15) + '/s</text>'];
    if (d) out.push('<path class="rate" d="' + d + 'L' + x(st.now).toFixed(1) + ' ' + y(0) + 'L' + x(st.rate[0][0]).toFixed(1) + ' ' + y(0) + 'Z"/>');
    svg.setAttribute('height', String(H));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.innerHTML = out.join('');
  }

  function drawStats() {
    var s = st.stats;
    if (!s) return;
    var cards = [
      ['rate', count(s.rate) + '/s', 'items per second'],
      ['done', count(s.items) + (s.total !== null ? ' / ' + count(s.total) : ''), 'items done'],
      ['eta', s.eta === null ? '-' : st.ended ? 'done' : dur(s.eta), s.total !== null ? 'ETA' : 'queue empty in'],
      ['failed', count(s.failed), 'failed units', s.failed > 0],
      ['queued', count(s.queued), 'queued units'],
      ['running', count(s.running), 'running units'],
      ['workers', String(st.workers.filter(function (w) { return !w[3]; }).length) + (st.workers.some(function (w) { return w[3]; }) ? ' +1' : ''), st.workers.some(function (w) { return w[3]; }) ? 'workers + spare' : 'workers'],
      ['breaches', String(s.breaches), 'limit breaches', s.breaches > 0],
      ['recycles', String(s.recycles), 'recycles'],
      ['crashes', String(s.crashes), 'worker deaths', s.crashes > 0],
      ['retries', String(s.retries), 'retries'],
      ['timeouts', String(s.timeouts), 'timeouts', s.timeouts > 0]
    ];
    $('stats').innerHTML = cards.map(function (c) {
      return '<div class="stat' + (c[3] ? ' bad' : '') + '"><b id="stat-' + c[0] + '">' + esc(c[1]) + '</b><span>' + c[2] + '</span></div>';
    }).join('');
  }

  function drawEvents() {
    var list = st.events.filter(function (e) { return e.kind !== 'start'; }).slice(-40).reverse();
    $('events').innerHTML = list.length ? list.map(function (e) {
      return '<li class="' + e.kind + '"><time>' + clock(e.t) + '</time><span class="kind">' + e.kind + '</span>' + esc(e.text) + '</li>';
    }).join('') : '<li>none yet</li>';
  }

  function draw() {
    if (!st.init) return;
    drawStats();
    drawStream();
    drawMemory();
    drawRate();
    drawEvents();
  }

  var es = new EventSource('events');
  es.addEventListener('init', function (ev) { reset(JSON.parse(ev.data)); setStatus('live', 'live'); schedule(); });
  es.onmessage = function (ev) {
    tick(JSON.parse(ev.data));
    if (st.ended) { setStatus('pool closed', 'ended'); es.close(); }
    schedule();
  };
  es.onerror = function () { if (!st.ended) setStatus('disconnected, retrying', 'lost'); };
  window.addEventListener('resize', schedule);
})();
`;

export function dashboardPage(title: string): string {
  const safe = title.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${safe} - corral</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1 id="title">${safe}</h1><span id="status">connecting</span></header>
<main>
<div id="stats"></div>
<section><h2>Task stream (last 30 s, one lane per worker)</h2><svg id="stream" role="img" aria-label="task stream"></svg>
<div class="legend"><span><i style="background:#3b82f6"></i>ok</span><span><i style="background:#dc2626"></i>threw</span><span><i style="background:#9333ea"></i>limit breach</span><span><i style="background:#7f1d1d"></i>crash</span><span><i style="background:#d97706"></i>timeout</span><span><i style="background:#9ca3af"></i>aborted</span></div></section>
<section><h2>Memory per worker against its limits</h2><svg id="memory" role="img" aria-label="memory per worker"></svg><div class="legend" id="memory-legend"></div></section>
<section><h2>Throughput</h2><svg id="rate" role="img" aria-label="throughput"></svg></section>
<section><h2>Breaches, recycles and crashes</h2><ol id="events"></ol></section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
