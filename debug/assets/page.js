// The page of fanoutdebug: it polls the JSON endpoint and redraws. Every
// key, name and error is written with textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const runID = location.pathname.endsWith('/run') ? new URLSearchParams(location.search).get('id') : null;
const source = runID === null ? 'api' : 'api/run?id=' + encodeURIComponent(runID);
let refresh = 1000;

function num(n) { return Number(n).toLocaleString('en-US'); }

function dur(ms) {
  if (ms < 0) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' m ' + String(Math.floor(s % 60)).padStart(2, '0') + ' s';
  return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' m';
}

function cost(c) {
  const parts = [];
  if (c.tokens) parts.push(num(c.tokens) + ' tok');
  if (c.cents) parts.push(c.cents >= 100 ? '$' + (c.cents / 100).toFixed(2) : c.cents.toFixed(2) + '¢');
  return parts.length ? parts.join(', ') : '—';
}

function when(t) { return new Date(t).toLocaleTimeString('en-GB'); }

// cell makes a td: text, or a Node; cls and field (data-f) are optional.
function cell(content, cls, field) {
  const td = document.createElement('td');
  if (content instanceof Node) td.append(content); else td.textContent = content;
  if (cls) td.className = cls;
  if (field) td.dataset.f = field;
  return td;
}

function link(href, text) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = text;
  return a;
}

// table redraws t: heads is a list of [label, numeric?], rows a list of tr.
function table(t, heads, rows, empty) {
  const thead = document.createElement('thead');
  const hr = document.createElement('tr');
  for (const [label, numeric] of heads) {
    const th = document.createElement('th');
    th.textContent = label;
    if (numeric) th.className = 'num';
    hr.append(th);
  }
  thead.append(hr);
  const tbody = document.createElement('tbody');
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(empty, 'empty');
    td.colSpan = heads.length;
    tr.append(td);
    tbody.append(tr);
  }
  tbody.append(...rows);
  t.replaceChildren(thead, tbody);
}

function tr(...cells) {
  const r = document.createElement('tr');
  r.append(...cells);
  return r;
}

// bar shows the keys done of a run: ok, failed, skipped.
function bar(run, el) {
  const b = el || document.createElement('div');
  b.className = el ? 'bar big' : 'bar';
  const whole = run.tasks > 0 ? run.tasks : Math.max(run.done + run.in_flight, 1);
  const seg = (n, cls) => {
    const s = document.createElement('span');
    s.className = cls;
    s.style.width = (100 * n / whole) + '%';
    return s;
  };
  b.replaceChildren(seg(run.succeeded, 'ok'), seg(run.failed, 'bad'), seg(run.skipped, 'skip'));
  return b;
}

function progress(run) {
  const d = document.createElement('div');
  d.className = 'progress';
  const label = document.createElement('span');
  label.textContent = num(run.done) + ' / ' + (run.tasks >= 0 ? num(run.tasks) : '?');
  d.append(bar(run), label);
  return d;
}

const runHeads = [['run'], ['name'], ['keys done'], ['ok', 1], ['failed', 1], ['skipped', 1], ['in flight', 1],
  ['retries', 1], ['hedges', 1], ['limiter wait', 1], ['cost', 1], ['elapsed', 1], ['ETA', 1], ['nested runs', 1]];

// runTable draws one line per run into t.
function runTable(t, runs, empty) {
  table(t, runHeads, runs.map((r) => {
    const nested = r.nested_runs ? num(r.nested_running) + ' running, ' + num(r.nested_runs) + ' in all' : '';
    const row = tr(
      cell(link('run?id=' + r.id, '#' + r.id), '', 'id'), cell(r.name, 'key', 'name'), cell(progress(r), '', 'progress'),
      cell(num(r.succeeded), 'num', 'succeeded'), cell(num(r.failed), 'num', 'failed'),
      cell(num(r.skipped), 'num', 'skipped'), cell(num(r.in_flight), 'num', 'in_flight'),
      cell(num(r.retries), 'num', 'retries'), cell(num(r.hedges), 'num', 'hedges'),
      cell(dur(r.limiter_wait_ms), 'num', 'limiter_wait'), cell(cost(r.cost), 'num', 'cost'),
      cell(dur(r.elapsed_ms), 'num', 'elapsed'), cell(r.running ? dur(r.eta_ms) : 'done', 'num', 'eta'),
      cell(nested, 'num', 'nested'));
    row.dataset.run = r.id;
    if (!r.running) row.className = 'done';
    return row;
  }), empty);
}

function drawOverview(s) {
  runTable($('runs'), s.runs, 'No run yet: pass page.Observer(name) to a run with fanout.WithObserver.');
  const notes = [];
  if (s.hidden) notes.push(num(s.hidden) + ' more running, not listed');
  if (s.untracked) notes.push(num(s.untracked) + ' runs not followed (over the cap)');
  $('runs-note').textContent = notes.join(' · ');
  $('nested-box').hidden = s.nested.length === 0;
  runTable($('nested'), s.nested, '');
  $('nested-note').textContent = 'started inside the tasks of the runs above' +
    (s.hidden_nested ? ' · ' + num(s.hidden_nested) + ' more running, not listed' : '');

  table($('limits'), [['name'], ['kind'], ['in use / cap', 1], ['rate /s', 1], ['burst', 1], ['tokens now', 1], ['note']],
    s.limits.map((l) => tr(cell(l.name, 'key'), cell(l.kind),
      cell(l.kind === 'semaphore' ? num(l.in_use) + ' / ' + num(l.cap) : '', 'num'),
      cell(l.rate ? num(l.rate) : '', 'num'), cell(l.burst ? num(l.burst) : '', 'num'),
      cell(l.kind === 'rate' ? String(l.tokens) : '', 'num'), cell(l.note || '', 'wrap'))),
    'None shown: page.ShowSemaphore and page.ShowLimiter add them.');
  const w = s.server_wait;
  $('server-wait').textContent = w ? 'last server-directed wait: ' + dur(w.wait_ms) + ' for key ' + w.key +
    ' of run #' + w.run + ' at ' + when(w.at) + (w.left_ms > 0 ? ' (' + dur(w.left_ms) + ' left)' : '') : '';

  table($('names'), [['name'], ['running', 1], ['finished', 1], ['keys', 1], ['failed', 1], ['skipped', 1], ['retries', 1], ['cost', 1]],
    s.names.map((n) => tr(cell(n.name, 'key'), cell(num(n.running), 'num'), cell(num(n.finished), 'num'),
      cell(num(n.keys), 'num'), cell(num(n.failed), 'num'), cell(num(n.skipped), 'num'),
      cell(num(n.retries), 'num'), cell(cost(n.cost), 'num'))), 'No run yet.');

  drawFleets(s.fleets);
}

function drawFleets(fleets) {
  const box = $('fleets');
  box.replaceChildren();
  for (const f of fleets) {
    const h = document.createElement('h2');
    h.textContent = 'Fleet: ' + f.name;
    const note = document.createElement('span');
    note.className = 'note';
    const c = f.fleet;
    note.textContent = f.error || ('sent ' + num(c.sent) + ' · replies ' + num(c.replies) + ' · redelivered ' +
      num(c.redelivered) + ' · duplicates ' + num(c.duplicates) + ' · late ' + num(c.late));
    h.append(note);
    const workers = document.createElement('table');
    table(workers, [['worker'], ['slots in use', 1], ['started', 1], ['succeeded', 1], ['failed', 1], ['redelivered', 1], ['seen']],
      c.workers.map((w) => tr(cell(w.name, 'key'), cell(num(w.in_use) + ' / ' + num(w.slots), 'num'),
        cell(num(w.started), 'num'), cell(num(w.succeeded), 'num'), cell(num(w.failed), 'num'),
        cell(num(w.redelivered), 'num'), cell(w.seen ? when(w.seen) : ''))), 'No worker reported.');
    const batches = document.createElement('table');
    table(batches, [['batch'], ['queued', 1], ['running', 1]],
      c.batches.map((b) => tr(cell(b.id, 'key'), cell(num(b.queued), 'num'), cell(num(b.running), 'num'))), 'No batch.');
    box.append(h, workers, document.createElement('br'), batches);
  }
}

function tile(field, text, value) {
  const v = $('v-' + field);
  v.textContent = text;
  if (value !== undefined) v.dataset.value = value;
}

function drawDetail(d) {
  document.title = 'fanout #' + d.id + ' ' + d.name;
  $('crumb').replaceChildren('run #' + d.id);
  if (d.parent) $('crumb').append(' · nested in ', link('run?id=' + d.parent, 'run #' + d.parent));
  $('title').textContent = '#' + d.id + ' ' + d.name;
  $('state').textContent = d.running ? 'running' : 'finished';
  $('state').className = 'badge' + (d.running ? ' running' : '');
  bar(d, $('bar'));
  tile('done', num(d.done) + ' / ' + (d.tasks >= 0 ? num(d.tasks) : '?'), d.done);
  for (const f of ['succeeded', 'failed', 'skipped', 'in_flight', 'attempts', 'retries', 'hedges']) tile(f, num(d[f]), d[f]);
  $('v-failed').parentElement.classList.toggle('bad', d.failed > 0);
  tile('limiter_wait', dur(d.limiter_wait_ms), d.limiter_wait_ms);
  tile('cost', cost(d.cost), d.cost.tokens + ' ' + d.cost.cents);
  tile('elapsed', dur(d.elapsed_ms), d.elapsed_ms);
  tile('eta', d.running ? dur(d.eta_ms) : 'done', d.eta_ms);

  $('keys-note').textContent = d.in_flight > d.keys.length ? 'the longest ' + d.keys.length + ' of ' + num(d.in_flight) : 'longest first';
  table($('keys'), [['key'], ['state'], ['attempt', 1], ['copies', 1], ['for', 1], ['this attempt', 1], ['last error']],
    d.keys.map((k) => {
      const state = k.state === 'retry wait' ? 'retry in ' + dur(k.retry_in_ms) : k.state;
      const cls = 'state-' + k.state.split(' ')[0];
      const row = tr(cell(k.key, 'key', 'key'), cell(state, cls, 'state'), cell(num(k.attempt), 'num', 'attempt'),
        cell(num(k.copies), 'num'), cell(dur(k.for_ms), 'num', 'for'),
        cell(k.state === 'running' ? dur(k.attempt_ms) : '', 'num'), cell(k.last_error || '', 'err'));
      row.dataset.key = k.key;
      return row;
    }), d.running ? 'No key in flight.' : 'The run has finished.');

  $('failures-note').textContent = d.failed > d.failures.length ? 'the last ' + d.failures.length + ' of ' + num(d.failed) : '';
  table($('failures'), [['key'], ['kind'], ['attempts', 1], ['took', 1], ['at'], ['error']],
    d.failures.map((f) => {
      const row = tr(cell(f.key, 'key', 'key'), cell(f.kind, '', 'kind'), cell(num(f.attempts), 'num', 'attempts'),
        cell(dur(f.elapsed_ms), 'num'), cell(when(f.at)), cell(f.error, 'err', 'error'));
      row.dataset.key = f.key;
      return row;
    }), 'No key has failed.');

  table($('retries'), [['key'], ['attempt', 1], ['wait', 1], ['error']],
    d.recent_retries.map((r) => tr(cell(r.key, 'key'), cell(num(r.attempt), 'num'),
      cell(dur(r.wait_ms) + (r.server_directed ? ' (server)' : ''), 'num'), cell(r.error, 'err'))), 'No retry.');

  $('detail-nested-box').hidden = d.nested.length === 0;
  runTable($('detail-nested'), d.nested, '');

  table($('slowest'), [['key'], ['attempts', 1], ['took', 1], ['outcome']],
    d.slowest.map((k) => tr(cell(k.key, 'key'), cell(num(k.attempts), 'num'), cell(dur(k.elapsed_ms), 'num'),
      cell(k.kind || 'ok'))), 'No key has finished.');
}

function setStatus(text, cls) {
  $('status').textContent = text;
  $('status').className = 'status ' + cls;
}

async function tick() {
  try {
    const res = await fetch(source, { cache: 'no-store' });
    const body = await res.json();
    if (!res.ok) {
      $('overview').hidden = $('detail').hidden = true;
      $('gone').hidden = false;
      $('gone-text').textContent = body.error || res.statusText;
      setStatus('no such run', 'down');
      return; // a run that is gone does not come back
    }
    if (body.refresh_ms) refresh = body.refresh_ms;
    if (runID === null) drawOverview(body); else drawDetail(body);
    $(runID === null ? 'overview' : 'detail').hidden = false;
    setStatus('live · ' + new Date().toLocaleTimeString('en-GB'), 'live');
  } catch (e) {
    setStatus('disconnected: ' + e.message + ' · retrying', 'down');
  }
  setTimeout(tick, refresh);
}

if (runID !== null) $('json').href = source;
tick();
