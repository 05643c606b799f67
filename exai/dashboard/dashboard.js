// The exai dashboard: polls /api/status and /api/history once a second and updates the page
// in place. Every string that can come from a client (request ids, messages) is set with
// textContent or as an attribute value, never parsed as markup.
'use strict';

const WINDOW_S = 900;
const TOP_CALLS = 30;
const TOP_SESSIONS = 8;
const REQUEST_TIMEOUT_MS = 2500;

const COLORS = {
  ok: '#3fb950', warn: '#d29922', timeout: '#f0883e', bad: '#f85149', over: '#a371f7',
  cancel: '#6e7681', blue: '#58a6ff', grid: '#232c38', axis: '#8893a2', text: '#d9e0e8',
};
const OUTCOMES = [
  { label: 'ok', color: COLORS.ok, of: f => f.ok || 0 },
  { label: 'tool error', color: COLORS.warn, of: f => f.tool_error || 0 },
  { label: 'timed out', color: COLORS.timeout, of: f => f.cancelled_deadline || 0 },
  { label: 'error', color: COLORS.bad, of: f => (f.error || 0) + (f.cancelled_shutdown || 0) },
  { label: 'overloaded', color: COLORS.over, of: f => f.overloaded || 0 },
  { label: 'cancelled', color: COLORS.cancel, of: f => (f.cancelled_client || 0) + (f.cancelled_disconnect || 0) + (f.cancelled || 0) },
];
const FAILURE_OUTCOMES = ['tool_error', 'error', 'overloaded', 'cancelled_deadline', 'cancelled_shutdown'];
const KIND_COLORS = {
  rate_limited: COLORS.warn, timeout: COLORS.timeout, unavailable: COLORS.bad,
  bad_response: COLORS.over, auth: '#db61a2', bad_request: '#79c0ff', content_filtered: '#56d4dd',
  context_too_long: '#e3b341',
};
const SPARE_COLORS = ['#79c0ff', '#56d4dd', '#e3b341', '#db61a2', '#a5d6ff', '#ffa657'];

const $ = id => document.getElementById(id);

// -- small helpers ----------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

function setClass(node, className) {
  if (node.className !== className) node.className = className;
}

function dur(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '-';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
  const h = Math.floor(seconds / 3600);
  return `${h}h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function hhmm(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

function rate(v) { return v >= 10 || Number.isInteger(v) ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2); }

function sum(values) { return values.reduce((a, b) => a + b, 0); }

// A scale top whose quarters are round numbers (whole ones for counts).
function niceTop(value, whole) {
  const quarter = Math.max(value, whole ? 4 : 1e-9) / 4;
  const power = Math.pow(10, Math.floor(Math.log10(quarter)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    const candidate = step * power;
    if (candidate >= quarter && (!whole || Number.isInteger(candidate))) return 4 * candidate;
  }
  return 40 * power;
}

// Keeps `count` children in `parent`, made by `make` and reused from one refresh to the next.
function keepChildren(parent, count, make) {
  while (parent.children.length < count) parent.appendChild(make());
  while (parent.children.length > count) parent.lastElementChild.remove();
  return Array.from(parent.children);
}

// -- state ---------------------------------------------------------------------------

const state = {
  rows: new Map(),      // unix second -> history row
  latest: null,         // newest second received
  now: Date.now() / 1000,
  limits: { inflight: 0, queued: 0 },
  lastMinute: null,
  failures: [],
  status: null,
  lastOk: null,
  failingSince: null,
  hover: null,          // index into the window under the mouse, or null
};

function mergeHistory(history) {
  if (state.latest !== null && history.now < state.latest - 5) {
    state.rows.clear();  // a restarted daemon: its clock starts a new history
  }
  for (const row of history.series) state.rows.set(row.t, row);
  state.now = history.now;
  state.latest = Math.floor(history.now);
  const oldest = state.latest - WINDOW_S + 1;
  for (const t of state.rows.keys()) if (t < oldest) state.rows.delete(t);
  state.limits = history.limits || state.limits;
  state.lastMinute = history.last_minute;
  state.failures = history.failures || [];
}

// The window as an array of WINDOW_S rows (null where the daemon has none), oldest first.
function windowRows() {
  const end = state.latest === null ? Math.floor(state.now) : state.latest;
  const out = new Array(WINDOW_S);
  for (let i = 0; i < WINDOW_S; i++) out[i] = state.rows.get(end - WINDOW_S + 1 + i) || null;
  return { start: end - WINDOW_S + 1, rows: out };
}

// -- charts --------------------------------------------------------------------------

const PAD = { left: 44, right: 10, top: 8, bottom: 20 };

function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height, plotW: width - PAD.left - PAD.right, plotH: height - PAD.top - PAD.bottom };
}

// spec: { kind: 'bars'|'lines', series: [{label, color, values, dash, width}], format, limits: [{value, color}] }
function drawChart(figure, spec, start) {
  const canvas = figure.querySelector('canvas');
  const { ctx, width, plotW, plotH } = prepareCanvas(canvas);
  if (plotW <= 0 || plotH <= 0) return;
  const x0 = PAD.left, y0 = PAD.top + plotH;
  const binS = spec.kind === 'bars' ? Math.max(1, Math.ceil(WINDOW_S / (plotW / 3))) : 1;
  const bins = Math.ceil(WINDOW_S / binS);

  // Bars: per bin, each series' mean per second, stacked.
  let stacks = null, top = 0;
  if (spec.kind === 'bars') {
    stacks = [];
    for (let b = 0; b < bins; b++) {
      const parts = spec.series.map(s => {
        let total = 0;
        for (let i = b * binS; i < Math.min(WINDOW_S, (b + 1) * binS); i++) total += s.values[i] || 0;
        return total / binS;
      });
      stacks.push(parts);
      top = Math.max(top, sum(parts));
    }
  } else {
    for (const s of spec.series) for (const v of s.values) if (v !== null && v > top) top = v;
  }
  for (const limit of spec.limits || []) if (limit.value > top && limit.value <= 4 * Math.max(top, 1)) top = limit.value;
  // Linear: 0 to a round top in quarters. Log (latency): whole decades around the data.
  let y, ticks;
  if (spec.log) {
    let low = Infinity;
    for (const s of spec.series) for (const v of s.values) if (v !== null && v > 0 && v < low) low = v;
    const lo = Math.floor(Math.log10(isFinite(low) ? low : 0.01));
    const hi = Math.max(lo + 1, Math.ceil(Math.log10(top > 0 ? top : 1)));
    y = v => y0 - ((Math.log10(Math.max(v, Math.pow(10, lo))) - lo) / (hi - lo)) * plotH;
    ticks = [];
    for (let d = lo; d <= hi; d++) ticks.push(Math.pow(10, d));
  } else {
    const yMax = niceTop(top * 1.05, spec.whole);
    y = v => y0 - (v / yMax) * plotH;
    ticks = [0, 1, 2, 3, 4].map(i => (yMax * i) / 4);
  }
  const yTop = spec.log ? ticks[ticks.length - 1] : ticks[4];

  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.textBaseline = 'middle';
  for (const v of ticks) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath(); ctx.moveTo(x0, yy); ctx.lineTo(x0 + plotW, yy); ctx.stroke();
    ctx.fillStyle = COLORS.axis; ctx.textAlign = 'right';
    ctx.fillText(spec.format(v), x0 - 6, yy);
  }
  // Time axis: a label every 3 minutes on the clock.
  ctx.textAlign = 'center'; ctx.textBaseline = 'top';
  const xOf = i => x0 + ((i + 0.5) / WINDOW_S) * plotW;
  for (let t = Math.ceil(start / 180) * 180; t < start + WINDOW_S; t += 180) {
    const xx = Math.round(xOf(t - start)) + 0.5;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath(); ctx.moveTo(xx, PAD.top); ctx.lineTo(xx, y0); ctx.stroke();
    ctx.fillStyle = COLORS.axis;
    ctx.fillText(hhmm(t), Math.min(Math.max(xx, x0 + 14), width - 18), y0 + 5);
  }

  if (stacks) {
    const bw = plotW / bins;
    stacks.forEach((parts, b) => {
      let base = 0;
      parts.forEach((v, k) => {
        if (!v) return;
        ctx.fillStyle = spec.series[k].color;
        const top = y(base + v), bottom = y(base);
        ctx.fillRect(x0 + b * bw + 0.5, top, Math.max(1, bw - 1), Math.max(1, bottom - top));
        base += v;
      });
    });
  } else {
    for (const s of spec.series) {
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.6; ctx.lineJoin = 'round';
      ctx.setLineDash(s.dash ? [4, 3] : []);
      ctx.beginPath();
      let drawing = false;
      const known = i => s.values[i] !== null && s.values[i] !== undefined;
      s.values.forEach((v, i) => {
        if (!known(i)) { drawing = false; return; }
        if (drawing) ctx.lineTo(xOf(i), y(v)); else ctx.moveTo(xOf(i), y(v));
        drawing = true;
      });
      ctx.stroke();
      ctx.fillStyle = s.color;  // a second with no neighbour would not show as a line
      s.values.forEach((v, i) => {
        if (known(i) && !known(i - 1) && !known(i + 1)) {
          ctx.beginPath(); ctx.arc(xOf(i), y(v), 2, 0, 2 * Math.PI); ctx.fill();
        }
      });
    }
    ctx.setLineDash([]);
  }
  for (const limit of spec.limits || []) {
    if (limit.value > yTop) continue;
    ctx.strokeStyle = limit.color; ctx.lineWidth = 1; ctx.setLineDash([5, 4]);
    const yy = Math.round(y(limit.value)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x0, yy); ctx.lineTo(x0 + plotW, yy); ctx.stroke();
    ctx.setLineDash([]);
  }
  if (state.hover !== null) {
    const xx = Math.round(xOf(state.hover)) + 0.5;
    ctx.strokeStyle = '#c9d1d9'; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(xx, PAD.top); ctx.lineTo(xx, y0); ctx.stroke();
  }
}

// Legend entries: [{label, color, value, dash}]; rebuilt only when the labels change.
function drawLegend(figure, entries, title) {
  const legend = figure.querySelector('.legend');
  const signature = entries.map(e => e.label).join('|') + '|' + title;
  if (legend.dataset.signature !== signature) {
    legend.replaceChildren();
    if (title) legend.appendChild(el('span', 'when'));
    for (const entry of entries) {
      const item = el('span');
      const swatch = el('span', entry.dash ? 'swatch dash' : 'swatch');
      item.append(swatch, el('span', '', `${entry.label} `), el('b'));
      legend.appendChild(item);
    }
    legend.dataset.signature = signature;
  }
  const items = Array.from(legend.children);
  if (title) setText(items.shift(), title);
  entries.forEach((entry, i) => {
    const [swatch, , value] = items[i].children;
    if (entry.dash) swatch.style.borderColor = entry.color; else swatch.style.background = entry.color;
    setText(value, entry.value);
  });
}

function renderCharts() {
  const { start, rows } = windowRows();
  const hover = state.hover === null ? null : rows[state.hover];
  const when = state.hover === null ? 'last minute:' : `${clock(start + state.hover)}:`;
  const recent = rows.slice(-60);

  // Calls per second by outcome.
  const calls = OUTCOMES.map(o => ({ label: o.label, color: o.color, values: rows.map(r => (r ? o.of(r.finished) : 0)) }));
  drawChart($('chart-calls'), { kind: 'bars', series: calls, format: rate }, start);
  drawLegend($('chart-calls'), OUTCOMES.map(o => ({
    label: o.label, color: o.color,
    value: state.hover !== null ? (hover ? o.of(hover.finished) : 0) : sum(recent.map(r => (r ? o.of(r.finished) : 0))),
  })), when);

  // Latency.
  const p50 = rows.map(r => (r ? r.latency_p50_s : null));
  const p95 = rows.map(r => (r ? r.latency_p95_s : null));
  drawChart($('chart-latency'), {
    kind: 'lines', log: true, format: v => (v < 1 ? `${Math.round(v * 1000)} ms` : `${v} s`),
    series: [{ label: 'p95', color: COLORS.timeout, values: p95 }, { label: 'p50', color: COLORS.blue, values: p50 }],
  }, start);
  const lm = state.lastMinute || {};
  drawLegend($('chart-latency'), [
    { label: 'p50', color: COLORS.blue, value: dur(state.hover !== null ? (hover && hover.latency_p50_s) : lm.latency_p50_s) },
    { label: 'p95', color: COLORS.timeout, value: dur(state.hover !== null ? (hover && hover.latency_p95_s) : lm.latency_p95_s) },
  ], when);

  // Load against the limits.
  const inflight = rows.map(r => (r ? r.inflight : null));
  const queued = rows.map(r => (r ? r.queued : null));
  const limits = state.limits;
  drawChart($('chart-load'), {
    kind: 'lines', format: v => v.toFixed(0), whole: true,
    series: [{ label: 'queued', color: COLORS.warn, values: queued }, { label: 'in flight', color: COLORS.blue, values: inflight, width: 2 }],
    limits: [{ value: limits.inflight, color: COLORS.blue }, { value: limits.queued, color: COLORS.warn }],
  }, start);
  const s = state.status || {};
  drawLegend($('chart-load'), [
    { label: 'in flight', color: COLORS.blue, value: state.hover !== null ? (hover ? hover.inflight : '-') : s.inflight },
    { label: 'queued', color: COLORS.warn, value: state.hover !== null ? (hover ? hover.queued : '-') : s.queued },
    { label: 'in-flight limit', color: COLORS.blue, value: limits.inflight, dash: true },
    { label: 'queue limit', color: COLORS.warn, value: limits.queued, dash: true },
  ], state.hover !== null ? when : 'now:');

  // Provider errors by kind.
  const kinds = new Set();
  for (const r of rows) if (r) for (const k of Object.keys(r.provider_error_kinds)) kinds.add(k);
  const kindList = Array.from(kinds).sort();
  let spare = 0;
  const kindSeries = kindList.map(k => ({
    label: k.replace(/_/g, ' '), color: KIND_COLORS[k] || SPARE_COLORS[spare++ % SPARE_COLORS.length],
    values: rows.map(r => (r ? r.provider_error_kinds[k] || 0 : 0)),
  }));
  drawChart($('chart-provider-errors'), { kind: 'bars', series: kindSeries, format: rate }, start);
  const requests = state.hover !== null
    ? (hover ? sum(Object.values(hover.provider_requests)) : 0)
    : sum(recent.map(r => (r ? sum(Object.values(r.provider_requests)) : 0)));
  drawLegend($('chart-provider-errors'), [
    { label: 'requests', color: 'transparent', value: requests },
    ...kindSeries.map((k, i) => ({
      label: k.label, color: k.color,
      value: state.hover !== null ? (hover ? hover.provider_error_kinds[kindList[i]] || 0 : 0) : sum(recent.map(r => (r ? r.provider_error_kinds[kindList[i]] || 0 : 0))),
    })),
  ], kindList.length ? when : `${when} no provider errors in 15 min;`);
}

for (const figure of document.querySelectorAll('.chart')) {
  const canvas = figure.querySelector('canvas');
  canvas.addEventListener('mousemove', event => {
    const rect = canvas.getBoundingClientRect();
    const i = Math.floor(((event.clientX - rect.left - PAD.left) / (rect.width - PAD.left - PAD.right)) * WINDOW_S);
    state.hover = i >= 0 && i < WINDOW_S ? i : null;
    renderCharts();
  });
  canvas.addEventListener('mouseleave', () => { state.hover = null; renderCharts(); });
}
window.addEventListener('resize', () => renderCharts());

// -- tables and panels -----------------------------------------------------------------

function deadlineBar() {
  const bar = el('div', 'bar');
  bar.append(el('div', 'fill'), el('div', 'text'));
  return bar;
}

function updateBar(bar, fraction, text, warnAt = 0.6, badAt = 0.9) {
  const [fill, label] = bar.children;
  const pct = Math.max(0, Math.min(1, fraction));
  fill.style.width = `${(pct * 100).toFixed(1)}%`;
  setClass(fill, pct >= badAt ? 'fill bad' : pct >= warnAt ? 'fill warn' : 'fill');
  setText(label, text);
}

function renderInflight(requests) {
  const ordered = requests.slice().sort((a, b) => a.deadline_s - b.deadline_s);
  const shown = ordered.slice(0, TOP_CALLS);
  const rows = keepChildren($('inflight'), shown.length, () => {
    const tr = el('tr');
    for (let i = 0; i < 7; i++) tr.appendChild(el('td', i === 6 ? 'num' : ''));
    const cell = el('td');
    cell.appendChild(deadlineBar());
    tr.appendChild(cell);
    return tr;
  });
  shown.forEach((r, i) => {
    const cells = rows[i].children;
    const message = r.message || (r.state === 'queued' ? 'waiting for a slot' : '');
    const values = [r.connection || '-', String(r.id), r.tool, r.model || '-',
      r.step === null || r.step === undefined ? '-' : String(r.step), message, dur(r.age_s)];
    values.forEach((v, k) => setText(cells[k], v));
    cells[5].title = message;
    setClass(cells[5], r.state === 'queued' && !r.message ? 'muted' : '');
    const timeout = r.timeout_s || r.age_s + r.deadline_s;
    updateBar(cells[7].firstChild, timeout > 0 ? 1 - r.deadline_s / timeout : 1, `${dur(r.deadline_s)} left`);
    cells[7].title = `deadline ${dur(timeout)}, ${dur(r.deadline_s)} left`;
  });
  const queued = requests.filter(r => r.state === 'queued').length;
  setText($('inflight-count'), `(${requests.length}: ${requests.length - queued} running, ${queued} queued)`);
  $('inflight-empty').hidden = requests.length > 0;
  const more = requests.length - shown.length;
  $('inflight-more').hidden = more <= 0;
  if (more > 0) setText($('inflight-more'), `and ${more} more (deadlines further away)`);
}

const OUTCOME_PILL = {
  tool_error: 'pill warn', error: 'pill bad', overloaded: 'pill info', cancelled_deadline: 'pill bad', cancelled_shutdown: 'pill',
};

function renderFailures(failures) {
  const rows = keepChildren($('failures'), failures.length, () => {
    const tr = el('tr');
    tr.append(el('td'), el('td'), el('td'));
    const outcome = el('td');
    outcome.appendChild(el('span'));
    tr.append(outcome, el('td', 'message'), el('td', 'mono'));
    return tr;
  });
  failures.forEach((f, i) => {
    const cells = rows[i].children;
    setText(cells[0], clock(f.time));
    setText(cells[1], `${f.connection} / ${f.id}`);
    setText(cells[2], f.tool);
    const pill = cells[3].firstChild;
    setClass(pill, OUTCOME_PILL[f.outcome] || 'pill');
    setText(pill, f.outcome === 'cancelled_deadline' ? 'timed out' : f.outcome.replace(/_/g, ' '));
    setText(cells[4], f.message);
    cells[4].title = f.message;
    setText(cells[5], f.error_id || (f.code !== null && f.code !== undefined ? `code ${f.code}` : '-'));
  });
  setText($('failures-count'), `(${failures.length})`);
  $('failures-empty').hidden = failures.length > 0;
}

const CIRCUIT_PILL = { closed: 'pill ok', open: 'pill bad', half_open: 'pill warn', misconfigured: 'pill bad' };
const PROVIDER_FIELDS = ['requests', 'errors', 'in flight', 'latency p50 / p95', 'RPM ceiling', 'tokens in / out', 'cost'];

function renderProviders(providers, limiters) {
  const names = Object.keys(providers).sort();
  const cards = keepChildren($('providers'), names.length, () => {
    const card = el('div', 'provider');
    const head = el('div', 'head');
    head.append(el('span', 'name'), el('span', 'pill'));
    const list = el('dl');
    for (const field of PROVIDER_FIELDS) list.append(el('dt', '', field), el('dd'));
    card.append(head, list, el('div', 'note'));
    return card;
  });
  names.forEach((name, i) => {
    const p = providers[name];
    const [head, list, note] = cards[i].children;
    setText(head.children[0], name);
    setClass(head.children[1], CIRCUIT_PILL[p.circuit] || 'pill');
    setText(head.children[1], `circuit ${String(p.circuit).replace(/_/g, ' ')}`);
    const limiter = limiters[name] || {};
    const kinds = Object.entries(p.errors_by_kind || {}).sort((a, b) => b[1] - a[1]);
    const values = [
      p.calls_total,
      kinds.length ? `${p.errors_total} (${kinds.slice(0, 2).map(([k, n]) => `${n} ${k.replace(/_/g, ' ')}`).join(', ')})` : p.errors_total,
      limiter.total !== undefined ? `${p.inflight} / ${limiter.total}${limiter.waiting ? `, ${limiter.waiting} waiting` : ''}` : p.inflight,
      `${dur(p.latency_p50_s)} / ${dur(p.latency_p95_s)}`,
      p.rpm ? `${p.rpm}/min${p.rpm_waiting ? `, ${p.rpm_waiting} waiting` : ''}` : 'none',
      `${p.prompt_tokens ?? '-'} / ${p.completion_tokens ?? '-'}${p.cached_tokens ? ` (${p.cached_tokens} cached)` : ''}`,
      p.cost_usd === undefined || p.cost_usd === null ? '-' : `$${Number(p.cost_usd).toFixed(4)}`,
    ];
    const dds = list.querySelectorAll('dd');
    values.forEach((v, k) => setText(dds[k], v));
    let text = '';
    if (p.circuit === 'open') text = `failing: exai sends a probe request in ${dur(p.probe_in_s)}`;
    else if (p.circuit === 'half_open') text = 'a probe request decides whether the circuit closes';
    else if (p.circuit === 'misconfigured') text = 'the provider rejected the API key; fix it and restart';
    else if (p.circuit === 'not_configured') text = 'no API key configured';
    setText(note, text);
  });
}

function renderLimiters(limiters) {
  const fixed = ['global', 'kimi', 'glm'].filter(n => limiters[n]);
  const others = Object.keys(limiters).filter(n => !fixed.includes(n) && !n.startsWith('session:'));
  const sessions = Object.keys(limiters).filter(n => n.startsWith('session:'))
    .sort((a, b) => limiters[b].borrowed - limiters[a].borrowed || limiters[b].waiting - limiters[a].waiting || a.localeCompare(b));
  const shown = [...fixed, ...others, ...sessions.slice(0, TOP_SESSIONS)];
  const rows = keepChildren($('limiters'), shown.length, () => {
    const row = el('div', 'limiter');
    row.append(el('span', 'name'), deadlineBar(), el('span', 'waiting'));
    return row;
  });
  shown.forEach((name, i) => {
    const l = limiters[name];
    const [label, bar, waiting] = rows[i].children;
    setText(label, name);
    label.title = name;
    updateBar(bar, l.total ? l.borrowed / l.total : 0, `${l.borrowed} / ${l.total}`, 0.75, 1);
    setText(waiting, l.waiting ? `${l.waiting} waiting` : 'none waiting');
    setClass(waiting, l.waiting ? 'waiting busy' : 'waiting');
  });
  const hidden = sessions.slice(TOP_SESSIONS);
  $('limiters-more').hidden = hidden.length === 0;
  if (hidden.length) {
    const busy = hidden.reduce((n, name) => n + limiters[name].borrowed, 0);
    setText($('limiters-more'), `and ${hidden.length} more session limiters (${busy} borrowed)`);
  }
}

function renderSummary(s) {
  setText($('version'), s.version ? `v${s.version}` : '');
  $('demo').hidden = !s.demo;
  $('draining').hidden = !s.draining;
  setText($('k-connections'), s.connections);
  setText($('k-inflight'), `${s.inflight} / ${state.limits.inflight || '-'}`);
  setText($('k-queued'), `${s.queued} / ${state.limits.queued || '-'}`);
  const lm = state.lastMinute;
  if (lm) {
    const finished = sum(Object.values(lm.finished));
    const failed = sum(FAILURE_OUTCOMES.map(o => lm.finished[o] || 0));
    setText($('k-rate'), (finished / Math.max(1, lm.seconds)).toFixed(1));
    setText($('k-latency'), `${dur(lm.latency_p50_s)} / ${dur(lm.latency_p95_s)}`);
    setText($('k-failed'), failed);
    setClass($('k-failed'), failed ? 'value bad' : 'value');
  }
  setText($('k-threads'), s.threads === null || s.threads === undefined ? 'unknown' : s.threads);
  $('k-threads').title = s.threads === null || s.threads === undefined ? 'the conversation store does not report a count' : '';
  setText($('k-uptime'), dur(s.uptime_s));
}

// -- polling ---------------------------------------------------------------------------

class Unauthorized extends Error {}

async function getJSON(url) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(url, { cache: 'no-store', credentials: 'same-origin', signal: abort.signal });
    if (response.status === 401) throw new Unauthorized('unauthorized');
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

function showReachable(ok, error) {
  const live = $('live'), banner = $('banner'), content = $('content');
  if (ok) {
    state.lastOk = Date.now();
    state.failingSince = null;
    setClass(live, 'pill ok'); setText(live, 'live');
    banner.hidden = true;
    content.classList.remove('stale');
    return;
  }
  if (state.failingSince === null) state.failingSince = Date.now();
  setClass(live, 'pill bad'); setText(live, 'not answering');
  content.classList.toggle('stale', state.lastOk !== null);
  let text;
  if (error instanceof Unauthorized) {
    text = 'Not authorized: this daemon requires its token (EXAI_AUTH_TOKEN). Open /?token=YOUR_TOKEN once to sign in.';
  } else {
    const since = clock(state.failingSince / 1000);
    const age = state.lastOk === null ? 'no data received yet' : `last data ${Math.round((Date.now() - state.lastOk) / 1000)} s ago`;
    text = `The daemon is not answering (since ${since}; ${age}). What you see is stale. Retrying every second.`;
  }
  setText(banner, text);
  banner.hidden = false;
}

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const since = state.latest === null ? '' : `?since=${state.latest - 1}`;
    const [status, history] = await Promise.all([getJSON('/api/status'), getJSON(`/api/history${since}`)]);
    mergeHistory(history);
    state.status = status;
    renderSummary(status);
    renderCharts();
    renderInflight(status.requests || []);
    renderFailures(state.failures);
    renderProviders(status.providers || {}, status.limiters || {});
    renderLimiters(status.limiters || {});
    showReachable(true);
  } catch (error) {
    showReachable(false, error);
  } finally {
    busy = false;
  }
}

refresh();
setInterval(refresh, 1000);
