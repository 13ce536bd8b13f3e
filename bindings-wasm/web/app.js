// The ringkv visualizer: plain JS + SVG over the ringkv-wasm module (bindings-wasm/src).
// Three tabs share one ring drawing: Placement (a Ring you edit), Failures & repair (a simulated
// cluster, with a timeline of snapshots to step through) and Live cluster (a node's /ring and
// /cluster, polled).
import init, { Ring, Sim } from "./pkg/ringkv_wasm.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick") el.addEventListener("click", v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function showError(e) {
  const box = $("error");
  box.textContent = `Error: ${e && e.message ? e.message : e}`;
  box.hidden = false;
}
function clearError() { $("error").hidden = true; }

// ---------- colours: Okabe–Ito, safe for the common colour-vision deficiencies ----------
// Never the only cue: every node is also named in the legend, the tables and each arc's title,
// and beyond eight nodes colours repeat with a hatch.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"];
const colourIndex = new Map();
function colourOf(id) {
  if (!colourIndex.has(id)) colourIndex.set(id, colourIndex.size);
  const i = colourIndex.get(id);
  return { fill: PALETTE[i % PALETTE.length], hatched: i >= PALETTE.length };
}

// Zones get a second palette (Paul Tol's muted scheme), drawn as a band just inside the ring and
// always named too (legend, arc titles, tables).
const ZONE_PALETTE = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255"];
const zoneIndex = new Map();
function zoneColourOf(zone) {
  if (!zoneIndex.has(zone)) zoneIndex.set(zone, zoneIndex.size);
  return ZONE_PALETTE[zoneIndex.get(zone) % ZONE_PALETTE.length];
}

// ---------- the ring drawing (shared by the three tabs) ----------
const CX = 210, CY = 210, R_OUT = 175, R_IN = 122;

function point(turn, r) {
  const a = turn * 2 * Math.PI - Math.PI / 2;
  return [CX + r * Math.cos(a), CY + r * Math.sin(a)];
}
function arcPath(t0, t1, r0, r1) {
  const large = t1 - t0 > 0.5 ? 1 : 0;
  const [x0, y0] = point(t0, r1), [x1, y1] = point(t1, r1);
  const [x2, y2] = point(t1, r0), [x3, y3] = point(t0, r0);
  return `M${x0},${y0} A${r1},${r1} 0 ${large} 1 ${x1},${y1} L${x2},${y2} A${r0},${r0} 0 ${large} 0 ${x3},${y3} Z`;
}

function defs() {
  return h("svg:defs", {},
    h("svg:pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      h("svg:line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#000", "stroke-width": 2, "stroke-opacity": 0.45 })),
    h("svg:pattern", { id: "moved", width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(-45)" },
      h("svg:line", { x1: 0, y1: 0, x2: 0, y2: 5, stroke: "#000", "stroke-width": 2.2 })));
}

/**
 * Draws a RingDoc. `opts.moved`: partition ids to mark as moved; `opts.key`: a KeyDoc to pin;
 * `opts.outline`: node ids whose partitions are outlined (a key's replicas).
 */
function drawRing(doc, opts = {}) {
  const svg = $("ring");
  const q = doc.partition_count;
  const moved = new Set(opts.moved || []);
  const statusOf = new Map(doc.members.map((m) => [m.id, m]));
  svg.replaceChildren(h("svg:title", { id: "ring-title", text: opts.title || "The ring" }), h("svg:desc", { id: "ring-desc" }), defs());
  const arcs = h("svg:g", { class: "partitions" });
  for (const p of doc.partitions) {
    const owner = p.replicas[0];
    const c = colourOf(owner);
    const t0 = p.id / q, t1 = (p.id + 1) / q;
    const m = statusOf.get(owner);
    const down = m && (!m.alive || m.status === "down");
    const moving = p.moving_to && p.moving_to.length > 0;
    const zone = m && m.zone;
    const label = `Partition ${p.id}: owner ${owner}${zone ? ` in zone ${zone}` : ""}${down ? " (down)" : ""}; replicas ${p.replicas.join(", ")}` +
      (moved.has(p.id) ? "; moved" : "") + (moving ? `; moving to ${p.moving_to.join(", ")}` : "");
    const g = h("svg:g", { "data-partition": p.id, "data-owner": owner, class: moved.has(p.id) ? "moved" : null },
      h("svg:title", { text: label }),
      h("svg:path", { d: arcPath(t0, t1, R_IN, R_OUT), fill: c.fill, stroke: "#fff", "stroke-width": q > 128 ? 0.3 : 1,
        "fill-opacity": down ? 0.35 : 1 }));
    if (c.hatched) g.append(h("svg:path", { d: arcPath(t0, t1, R_IN, R_OUT), fill: "url(#hatch)" }));
    if (moved.has(p.id)) g.append(h("svg:path", { d: arcPath(t0, t1, R_OUT + 3, R_OUT + 14), fill: "url(#moved)", stroke: "#000", "stroke-width": 0.8 }));
    if (moving) g.append(h("svg:path", { d: arcPath(t0, t1, R_OUT + 3, R_OUT + 14), fill: "none", stroke: "#000", "stroke-width": 1.4, "stroke-dasharray": "3 2" }));
    arcs.append(g);
  }
  svg.append(arcs);
  // Zones: a band inside the ring in the owner's zone colour, when the members have zones.
  const zones = [...new Set(doc.members.map((m) => m.zone).filter(Boolean))].sort();
  if (zones.length) {
    const band = h("svg:g", { class: "zones" });
    for (const p of doc.partitions) {
      const zone = statusOf.get(p.replicas[0])?.zone;
      if (!zone) continue;
      band.append(h("svg:path", { d: arcPath(p.id / q, (p.id + 1) / q, R_IN - 8, R_IN - 2), fill: zoneColourOf(zone),
        "data-zone": zone, "data-partition": p.id }, h("svg:title", { text: `Partition ${p.id}: owner ${p.replicas[0]} in zone ${zone}` })));
    }
    svg.append(band);
  }
  // Owner labels in the middle of each node's largest run, when there is room.
  if (q <= 64) {
    for (const p of doc.partitions) {
      const t = (p.id + 0.5) / q;
      const [x, y] = point(t, (R_IN + R_OUT) / 2);
      svg.append(h("svg:text", { x, y: y + 4, "text-anchor": "middle", "font-size": q > 32 ? 8 : 10, fill: "#000", "aria-hidden": "true",
        stroke: "#fff", "stroke-width": 2.2, "paint-order": "stroke" , text: p.replicas[0] }));
    }
  }
  // Quarter marks.
  for (const [t, text] of [[0, "0"], [0.25, "2¹²⁸·¼"], [0.5, "2¹²⁸·½"], [0.75, "2¹²⁸·¾"]]) {
    const [x, y] = point(t, R_IN - 14);
    svg.append(h("svg:text", { x, y: y + 4, "text-anchor": "middle", "font-size": 10, fill: "#555", text }));
  }
  if (opts.key) {
    const k = opts.key;
    const [x0, y0] = point(k.turn, 30), [x1, y1] = point(k.turn, R_OUT + 20);
    const g = h("svg:g", { id: "key-marker", "data-partition": k.partition },
      h("svg:title", { text: `Key ${k.bucket}/${k.key} at partition ${k.partition}; preference list ${k.preference_list.join(", ")}` }),
      h("svg:line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: "#000", "stroke-width": 2.5, "stroke-dasharray": "6 3" }),
      h("svg:circle", { cx: x1, cy: y1, r: 6, fill: "#fff", stroke: "#000", "stroke-width": 2.5 }));
    svg.append(g);
    const p = k.partition, q2 = doc.partition_count;
    svg.append(h("svg:path", { id: "key-partition-outline", d: arcPath(p / q2, (p + 1) / q2, R_IN, R_OUT), fill: "none", stroke: "#000", "stroke-width": 3, "aria-hidden": "true" }));
  }
  const centre = opts.centre || [`${q} partitions`, doc.strategy === "tokens" ? "token ring" : "Q equal partitions"];
  centre.forEach((line, i) => svg.append(h("svg:text", { x: CX, y: CY - 8 + i * 18, "text-anchor": "middle", "font-size": i ? 12 : 15, "font-weight": i ? 400 : 600, text: line })));
  // Text alternative and legend.
  const counts = doc.members.map((m) => `${m.id} owns ${m.partitions}${m.alive === false || m.status === "down" ? " (down)" : ""}`);
  const membersOf = (zone) => doc.members.filter((m) => m.zone === zone).map((m) => m.id);
  $("ring-desc").textContent = `Ring of ${q} partitions. ${counts.join("; ")}.` + (moved.size ? ` ${moved.size} partitions moved.` : "") +
    (zones.length ? ` Zones: ${zones.map((z) => `${z} (${membersOf(z).join(", ")})`).join("; ")}.` : "");
  const zoneItems = zones.map((zone) => h("span", { class: "legend-item zone", "data-zone": zone },
    h("span", { class: "swatch zone-swatch", style: `background:${zoneColourOf(zone)}`, "aria-hidden": "true" }),
    `zone ${zone}: ${membersOf(zone).join(", ")}`));
  $("legend").replaceChildren(...zoneItems, ...doc.members.map((m) => {
    const c = colourOf(m.id);
    const sw = h("span", { class: "swatch", style: `background:${c.fill}${c.hatched ? ";background-image:repeating-linear-gradient(45deg,#0006 0 2px,transparent 2px 5px)" : ""}`, "aria-hidden": "true" });
    const state = m.alive === false ? " — down" : m.status && m.status !== "up" ? ` — ${m.status}` : "";
    return h("span", { class: "legend-item" + (m.alive === false ? " down" : ""), "data-node": m.id }, sw,
      `${m.id}${m.zone ? ` (zone ${m.zone})` : ""}: ${m.partitions}${state}`);
  }));
  $("ring-caption").textContent = opts.caption || "";
}

// ---------- tabs ----------
let activeTab = "placement";
function selectTab(name) {
  activeTab = name;
  for (const t of ["placement", "sim", "live"]) {
    const on = t === name;
    $(`tab-${t}`).setAttribute("aria-selected", String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (name !== "live") stopLive();
  clearError();
  ({ placement: renderPlacement, sim: renderSim, live: renderLive })[name]();
}

// ---------- Placement ----------
const placement = {
  members: [
    { id: "n1", capacity: 1, zone: "a" }, { id: "n2", capacity: 1, zone: "b" }, { id: "n3", capacity: 1, zone: "c" },
    { id: "n4", capacity: 2, zone: "a" }, { id: "n5", capacity: 1, zone: "b" },
  ],
  ring: null, moved: [], report: null, change: null, key: null,
};

function buildRing(members) {
  return new Ring(members, Number($("q").value), Number($("target-n").value), $("strategy").value, 16);
}

function changeMembers(next, what) {
  const before = placement.ring;
  const after = before ? before.withMembers(next) : buildRing(next);
  placement.members = next;
  placement.ring = after;
  if (before) {
    placement.report = before.compare(after, 10000);
    placement.moved = placement.report.moved_partitions;
    placement.change = what;
    before.free();
  }
  renderPlacement();
}

function renderPlacement() {
  if (!placement.ring) placement.ring = buildRing(placement.members);
  const ring = placement.ring;
  const doc = ring.describe();
  const share = ring.ownership();
  const n = Number($("target-n").value);
  placement.key = ring.locate($("bucket").value, $("key").value, Math.min(n, doc.members.length));
  if (activeTab === "placement") {
    drawRing(doc, { moved: placement.moved, key: placement.key, title: "Placement ring",
      caption: placement.moved.length ? `Hatched band: the ${placement.moved.length} partitions that changed owner (${placement.change}).` : "Partitions are coloured by owner; the dashed line is the key." });
  }
  $("members").tBodies[0].replaceChildren(...doc.members.map((m) => h("tr", { "data-node": m.id },
    h("th", { scope: "row" }, h("span", { class: "swatch", style: `background:${colourOf(m.id).fill}`, "aria-hidden": "true" }), m.id),
    h("td", { text: m.capacity }), h("td", { text: m.zone || "—" }), h("td", { text: m.partitions }),
    h("td", { text: `${(100 * share[m.id]).toFixed(1)}%` }),
    h("td", {}, h("button", { type: "button", "aria-label": `Remove ${m.id}`, onclick: () => removeNode(m.id), disabled: doc.members.length <= 1 }, "Remove")))));
  const r = placement.report;
  const box = $("move-report");
  if (!r) box.replaceChildren(h("p", { text: "Add or remove a node to see which partitions move." }));
  else {
    const bar = (label, cls, s) => h("div", { class: "bar", "data-scheme": cls },
      h("span", { text: label }),
      h("span", { class: "track", role: "img", "aria-label": `${label}: ${(100 * s.fraction).toFixed(1)}% of keys move` }, h("span", { class: `fill ${cls}`, style: `display:block;width:${(100 * s.fraction).toFixed(1)}%` })),
      h("span", { text: `${(100 * s.fraction).toFixed(1)}%` }));
    box.replaceChildren(
      h("p", { id: "move-summary", text: `${placement.change}: ${r.partitions_moved} of ${doc.partition_count} partitions changed owner; ` +
        `${(100 * r.replica_fraction).toFixed(1)}% of the key space changes a replica.` }),
      h("p", { text: `Keys changing owner, of ${r.keys_sampled.toLocaleString("en")} sampled:` }),
      bar("this ring", "ring", r.ring), bar("modulo hashing", "modulo", r.modulo), bar("random tokens", "tokens", r.tokens),
      h("p", { class: "caption", text: `Moved partitions: ${r.moved_partitions.join(", ") || "none"}.` }));
  }
  const k = placement.key;
  $("key-info").replaceChildren(
    h("dt", { text: "Position" }), h("dd", { id: "key-position", text: k.position }),
    h("dt", { text: "Hex" }), h("dd", { text: k.position_hex }),
    h("dt", { text: "Partition" }), h("dd", { id: "key-partition", text: `${k.partition} (${(k.turn * 360).toFixed(1)}° round the ring)` }),
    h("dt", { text: "Preference list" }), h("dd", { id: "key-preference", text: k.preference_list.join(", ") }),
    h("dt", { text: "Fallbacks" }), h("dd", { text: k.fallbacks.join(", ") || "none" }));
}

function removeNode(id) {
  const next = placement.members.filter((m) => m.id !== id);
  try { changeMembers(next, `Removing ${id}`); clearError(); } catch (e) { showError(e); }
}

function addNode(ev) {
  ev.preventDefault();
  const id = $("new-id").value.trim();
  const capacity = Number($("new-capacity").value);
  const zone = $("new-zone").value.trim() || null;
  if (placement.members.some((m) => m.id === id)) return showError(`${id} is already a node`);
  try {
    changeMembers([...placement.members, { id, capacity, zone }], `Adding ${id}`);
    clearError();
    const m = /^(.*?)(\d+)$/.exec(id);
    if (m) $("new-id").value = m[1] + (Number(m[2]) + 1);
  } catch (e) { showError(e); }
}

function rebuildPlacement() {
  try {
    if (placement.ring) placement.ring.free();
    placement.ring = buildRing(placement.members);
    placement.report = null; placement.moved = [];
    renderPlacement(); clearError();
  } catch (e) { showError(e); }
}

// ---------- Failures & repair: the simulator, with a timeline of snapshots ----------
const BUCKET = "carts";
const sim = { sim: null, seen: 0, timeline: [], cursor: -1, context: null, cut: null, joined: [], nextId: 6 };

const SIM_KEY = "alice";
function simKey() { return SIM_KEY; }

function resetSim() {
  if (sim.sim) sim.sim.free();
  sim.sim = new Sim({ nodes: 5, n: 3, r: "2", w: "2", seed: 42, partitions: 32 });
  Object.assign(sim, { seen: 0, timeline: [], cursor: -1, context: null, cut: null, joined: [], nextId: 6 });
  const first = sim.sim.put("n1", BUCKET, simKey(), "milk");
  sim.context = first.context;
  sim.sim.run(1000);
  record(`Started 5 nodes; wrote ${BUCKET}/${simKey()} = "milk" at n1 (replicas ${first.replicas.join(", ")})`);
}

function snapshot() {
  const s = sim.sim;
  return { now: s.now(), ring: s.ringDoc(), nodes: s.nodes(), hints: s.hints(), views: s.views(),
    replicas: s.replicas(BUCKET, simKey()), key: s.ring().locate(BUCKET, simKey(), 3) };
}

// View changes show in the Views table; every hand-off a node publishes is one, in every view.
const NOISY = new Set(["dropped", "message_dropped", "actor_renewed", "view_changed"]);
function record(label, extra = {}) {
  const events = sim.sim.events(sim.seen);
  sim.seen += events.length;
  const shown = events.filter((e) => !NOISY.has(e.kind) && !(e.kind === "anti_entropy" && !e.repaired));
  const dropped = events.filter((e) => e.kind === "dropped" || e.kind === "message_dropped").length;
  sim.timeline.push({ label, events: shown, dropped, snap: snapshot(), ...extra });
  sim.cursor = -1;
  renderSim();
}

function message(text) { $("sim-message").textContent = text; }

function pickReplicaToFail() {
  const key = sim.sim.ring().locate(BUCKET, simKey(), 3);
  const up = new Set(sim.sim.nodes().filter((n) => n.up).map((n) => n.id));
  return key.preference_list.find((n, i) => i > 0 && up.has(n)) || key.preference_list.find((n) => up.has(n));
}

function simAction(fn) {
  return () => { try { clearError(); fn(); } catch (e) { showError(e); } };
}

const scenarios = {
  fail() {
    const node = pickReplicaToFail();
    sim.sim.crash(node);
    sim.failed = node;
    sim.sim.run(5000);
    record(`${node} (a replica of ${simKey()}) failed; 5 s later the others' failure detectors see it down`);
    message(`${node} is down. Its peers noticed (see the timeline). Now write the key.`);
  },
  write() {
    const key = sim.sim.ring().locate(BUCKET, simKey(), 3);
    const up = new Set(sim.sim.nodes().filter((n) => n.up).map((n) => n.id));
    const coordinator = key.preference_list.find((n) => up.has(n)) || [...up][0];
    const value = `milk,eggs@${sim.sim.now()}`;
    const op = sim.sim.put(coordinator, BUCKET, simKey(), value, sim.context, "all");
    if (op.context) sim.context = op.context;
    sim.sim.run(200);
    const hints = sim.sim.hints();
    const fb = op.fallbacks.length ? ` — fallback ${op.fallbacks.join(", ")} stood in` : "";
    record(`Wrote "${value}" at ${coordinator} (W=all): ${op.ok ? "ok" : op.error}; replicas ${op.replicas.join(", ")}${fb}`);
    message(op.fallbacks.length
      ? `The write went to fallback ${op.fallbacks.join(", ")}, which keeps a hint for ${hints.map((x) => x.owner).join(", ") || "the owner"}.`
      : `Written to ${op.replicas.join(", ")}${hints.length ? "; hints: " + hints.length : ""}.`);
  },
  recover() {
    const down = sim.sim.nodes().filter((n) => !n.up).map((n) => n.id);
    if (!down.length) return message("No node is down.");
    const before = sim.sim.hints().length;
    for (const n of down) sim.sim.restart(n);
    record(`${down.join(", ")} restarted; ${before} hint(s) waiting`);
    for (let i = 0; i < 20 && sim.sim.hints().length; i++) { sim.sim.run(500); }
    sim.sim.run(500);
    const left = sim.sim.hints().length;
    record(`Hinted hand-off: ${before - left} hint(s) handed back to ${down.join(", ")}, ${left} left`);
    message(left ? `${left} hint(s) still waiting.` : `The hint was handed back: ${down.join(", ")} has the write and the fallback dropped its copy.`);
  },
  cut() {
    const ids = sim.sim.nodes().filter((n) => n.up).map((n) => n.id);
    const key = sim.sim.ring().locate(BUCKET, simKey(), ids.length);
    // Split so that each side holds at least one replica of the key.
    const a = [key.preference_list[0], ...ids.filter((n) => !key.preference_list.slice(0, 3).includes(n)).slice(0, 1)];
    const b = ids.filter((n) => !a.includes(n));
    sim.sim.partition([a, b]);
    sim.cut = [a, b];
    sim.sim.run(5000);
    record(`Cut the cluster in two: {${a.join(", ")}} | {${b.join(", ")}}; each side sees the other down`);
    message(`Partitioned: {${a.join(", ")}} and {${b.join(", ")}}. Write on both sides next.`);
  },
  writeBoth() {
    if (!sim.cut) return message("Cut the cluster first.");
    const [a, b] = sim.cut;
    const left = sim.sim.put(a[0], BUCKET, simKey(), "milk,eggs", sim.context);
    const right = sim.sim.put(b[0], BUCKET, simKey(), "bread", sim.context);
    sim.sim.run(300);
    record(`Wrote "milk,eggs" at ${a[0]} (${left.ok ? "ok" : left.error}) and "bread" at ${b[0]} (${right.ok ? "ok" : right.error}), both from the same context`);
    message("Both sides accepted a write: always writable. Neither saw the other's. Heal to see them meet.");
  },
  heal() {
    sim.sim.heal();
    sim.cut = null;
    record("Healed the partition: every link restored");
    for (let i = 0; i < 6; i++) sim.sim.run(500);
    const repaired = sim.sim.events(sim.seen).filter((e) => e.kind === "anti_entropy" && e.repaired > 0).length;
    record(`3 s later: anti-entropy exchanges repaired ${repaired} partition(s); no read needed`);
    const got = sim.sim.get("n1", BUCKET, simKey(), "all");
    if (got.context) sim.context = got.context;
    record(`Read at n1 (R=all): ${got.values.length} value(s): ${got.values.map((v) => `"${v}"`).join(" and ")}`);
    message(got.values.length > 1 ? `Siblings: ${got.values.map((v) => `"${v}"`).join(" and ")} — a write with this read's context reconciles them.` : `Value: ${got.values.join("")}`);
  },
  join() {
    const id = `n${sim.nextId++}`;
    sim.sim.join(id, 1);
    sim.joined.push(id);
    record(`${id} starts and joins through n1`, { gossip: id });
    let knows = 0, total = 0, last = "";
    for (let step = 1; step <= 300; step++) {
      sim.sim.run(100);
      const views = sim.sim.views();
      total = views.length;
      knows = views.filter((v) => v.members.some((m) => m.id === id)).length;
      const doc = sim.sim.ringDoc();
      const owned = doc.members.find((m) => m.id === id)?.partitions || 0;
      const moving = doc.partitions.filter((p) => p.moving_to.length).length;
      const state = `${knows} of ${total} nodes know ${id}; it owns ${owned} partition(s)${moving ? `, ${moving} moving to new replicas` : ""}`;
      const done = knows === total && owned > 0 && !moving;
      if (state !== last || done) record(`+${step * 100} ms: ${state}`, { gossip: id });
      last = state;
      if (done) break;
    }
    message(`${knows} of ${total} nodes know ${id}: the membership change spread by gossip. Step back through the timeline to watch it.`);
  },
  leave() {
    const id = sim.joined.pop();
    if (!id) return message("Join a node first.");
    sim.sim.leave(id);
    for (let i = 0; i < 10; i++) sim.sim.run(1000);
    record(`${id} left: it handed its partitions over before going`, { gossip: id });
    message(`${id} left the ring.`);
  },
  run() { sim.sim.run(1000); record("Ran 1 s"); },
};

function renderSim() {
  if (!sim.sim) resetSim();
  const at = sim.cursor < 0 ? sim.timeline.length - 1 : sim.cursor;
  const entry = sim.timeline[at];
  const snap = entry.snap;
  const keyNodes = snap.key.preference_list;
  if (activeTab === "sim") {
    drawRing(snap.ring, { key: snap.key, title: "Simulated cluster ring",
      centre: [`t = ${snap.now} ms`, `${snap.ring.partition_count} partitions`],
      caption: `Key ${BUCKET}/${simKey()} → partition ${snap.key.partition}, replicas ${keyNodes.join(", ")}. Faded arcs: owner down; dashed band: partition moving.` });
  }
  $("sim-clock").textContent = `(virtual time ${snap.now} ms${sim.cursor >= 0 ? `, viewing step ${at + 1} of ${sim.timeline.length}` : ""})`;
  $("sim-key-label").textContent = `${BUCKET}/${simKey()}`;
  $("sim-nodes").tBodies[0].replaceChildren(...snap.nodes.map((n) => h("tr", { "data-node": n.id, class: n.up ? null : "down-row" },
    h("th", { scope: "row" }, h("span", { class: "swatch", style: `background:${colourOf(n.id).fill}`, "aria-hidden": "true" }), n.id, n.zone ? ` (zone ${n.zone})` : "", keyNodes.includes(n.id) ? " (replica)" : ""),
    h("td", { class: "running", text: n.up ? "yes" : "no — down" }), h("td", { text: n.status }),
    h("td", { text: n.partitions }), h("td", { class: "hints", text: n.hints }),
    h("td", {}, h("button", { type: "button", "aria-label": `${n.up ? "Fail" : "Recover"} ${n.id}`, disabled: sim.cursor >= 0,
      onclick: simAction(() => {
        if (n.up) { sim.sim.crash(n.id); sim.sim.run(5000); record(`${n.id} failed (+5 s)`); }
        else { sim.sim.restart(n.id); sim.sim.run(3000); record(`${n.id} recovered (+3 s)`); }
      }) }, n.up ? "Fail" : "Recover")))));
  $("replicas").tBodies[0].replaceChildren(...snap.replicas.map((r) => h("tr", { "data-node": r.node },
    h("th", { scope: "row", text: r.node }),
    h("td", { class: "values", text: !r.present ? "(nothing)" : r.siblings.map((s) => s.deleted ? `(deleted ${s.dot})` : `"${s.value}" [${s.dot}]`).join("  |  ") +
      (r.siblings.length > 1 ? `  — ${r.siblings.length} siblings` : "") }))));
  $("hints").replaceChildren(...(snap.hints.length ? snap.hints.map((x) => h("li", { class: "hint", text: `${x.holder} holds a hint for ${x.owner}: ${x.bucket}/${x.key}` }))
    : [h("li", { class: "no-hints", text: "No hints pending." })]));
  // Gossip: each running node's view of each member.
  const ids = [...new Set(snap.views.flatMap((v) => v.members.map((m) => m.id)))].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  $("views").tHead.replaceChildren(h("tr", {}, h("th", { scope: "col", text: "View of" }), ...ids.map((id) => h("th", { scope: "col", text: id })), h("th", { scope: "col", text: "Ring version" }), h("th", { scope: "col", text: "Digest" })));
  $("views").tBodies[0].replaceChildren(...snap.views.map((v) => {
    const known = new Map(v.members.map((m) => [m.id, m.status]));
    return h("tr", { "data-node": v.node }, h("th", { scope: "row", text: v.node }),
      ...ids.map((id) => h("td", { class: known.has(id) ? "known" : "unknown", text: known.get(id) || "unknown" })),
      h("td", { text: v.ring_version ?? "—" }), h("td", { text: v.digest.slice(0, 8) }));
  }));
  // Timeline.
  $("timeline").replaceChildren(...sim.timeline.map((e, i) => h("li", { "aria-current": i === at ? "step" : null, "data-step": i },
    h("button", { type: "button", onclick: () => { sim.cursor = i === sim.timeline.length - 1 ? -1 : i; renderSim(); } }, `t=${e.snap.now} ms — ${e.label}`),
    e.events.length || e.dropped ? h("ul", { class: "events" },
      ...e.events.slice(0, 12).map((ev) => h("li", { class: `event ${ev.kind}`, text: `${ev.at} ms · ${ev.detail}` })),
      e.events.length > 12 ? h("li", { text: `… and ${e.events.length - 12} more` }) : null,
      e.dropped ? h("li", { text: `${e.dropped} message(s) dropped by the network` }) : null) : null)));
  const slider = $("tl-slider");
  slider.max = String(sim.timeline.length - 1);
  slider.value = String(at);
  $("tl-position").textContent = `Step ${at + 1} of ${sim.timeline.length}${sim.cursor >= 0 ? " (history)" : " (now)"}`;
  const current = $("timeline").querySelector("[aria-current=step]");
  if (current && activeTab === "sim") current.scrollIntoView({ block: "nearest" });
  for (const b of document.querySelectorAll(".scenarios button")) b.disabled = sim.cursor >= 0;
}

function step(delta) {
  const at = sim.cursor < 0 ? sim.timeline.length - 1 : sim.cursor;
  const next = Math.max(0, Math.min(sim.timeline.length - 1, at + delta));
  sim.cursor = next === sim.timeline.length - 1 ? -1 : next;
  renderSim();
}

// ---------- Live cluster ----------
const live = { timer: null, base: "", last: null };

function defaultLiveUrl() {
  return location.pathname.startsWith("/ui") ? location.origin : "";
}

async function fetchJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function pollLive() {
  try {
    const [ring, cluster] = await Promise.all([fetchJson(`${live.base}/ring`), fetchJson(`${live.base}/cluster`)]);
    live.last = { ring, cluster, at: new Date() };
    $("live-status").textContent = `Connected to ${cluster.node} at ${live.base} — updated ${live.last.at.toLocaleTimeString("en-GB")}`;
    renderLive();
  } catch (e) {
    $("live-status").textContent = `Cannot reach ${live.base}: ${e.message}. Retrying… (a page served elsewhere than the node's /ui needs CORS)`;
  }
}

function startLive(ev) {
  ev.preventDefault();
  stopLive();
  live.base = $("live-url").value.trim().replace(/\/+$/, "");
  if (!/^https?:\/\//.test(live.base)) { $("live-status").textContent = "Enter a node URL such as http://127.0.0.1:8087"; return; }
  $("live-status").textContent = `Connecting to ${live.base}…`;
  pollLive();
  live.timer = setInterval(pollLive, Number($("live-every").value));
}

function stopLive() {
  if (live.timer) clearInterval(live.timer);
  live.timer = null;
}

function renderLive() {
  if (!$("live-url").value) $("live-url").value = defaultLiveUrl();
  if (!live.last) {
    if (activeTab === "live") {
      $("ring").replaceChildren(h("svg:title", { id: "ring-title", text: "No live cluster" }), h("svg:desc", { id: "ring-desc", text: "Not connected" }),
        h("svg:text", { x: CX, y: CY, "text-anchor": "middle", "font-size": 14, text: "Connect to a node" }));
      $("legend").replaceChildren();
      $("ring-caption").textContent = "";
    }
    return;
  }
  const { ring, cluster } = live.last;
  // /cluster has the freshest member states; /ring has the placement.
  const byId = new Map(cluster.members.map((m) => [m.id, m]));
  const doc = { ...ring, members: ring.members.map((m) => ({ ...m, ...(byId.get(m.id) || {}) })) };
  const moving = ring.partitions.filter((p) => p.moving_to.length);
  if (activeTab === "live") {
    drawRing(doc, { title: `Live ring of ${ring.cluster}`, centre: [`ring v${ring.version}`, `${ring.partition_count} partitions`],
      caption: `As ${ring.node} sees it. Faded arcs: owner down; dashed band: partition being transferred.` });
  }
  $("live-summary").replaceChildren(
    h("dt", { text: "Cluster" }), h("dd", { text: cluster.cluster }),
    h("dt", { text: "Answering node" }), h("dd", { text: cluster.node }),
    h("dt", { text: "Claimant" }), h("dd", { text: cluster.claimant || "—" }),
    h("dt", { text: "Ring version" }), h("dd", { text: cluster.ring_version ?? "—" }),
    h("dt", { text: "Hints pending" }), h("dd", { id: "live-hints", text: cluster.hints_pending }),
    h("dt", { text: "Transfers pending" }), h("dd", { id: "live-transfers", text: cluster.transfers_pending }),
    h("dt", { text: "Requests in flight" }), h("dd", { text: cluster.in_flight }));
  $("live-members").tBodies[0].replaceChildren(...cluster.members.map((m) => h("tr", { "data-node": m.id },
    h("th", { scope: "row" }, h("span", { class: "swatch", style: `background:${colourOf(m.id).fill}`, "aria-hidden": "true" }), m.id),
    h("td", { text: m.status }), h("td", { text: m.alive ? "yes" : "no" }), h("td", { text: m.zone || "—" }),
    h("td", { text: m.capacity }), h("td", { text: m.partitions }), h("td", { text: m.http_addr }))));
  $("live-moving").textContent = moving.length
    ? `Moving: ${moving.map((p) => `${p.id} → ${p.moving_to.join(", ")}`).join("; ")}`
    : "No partition is moving.";
}

// ---------- start ----------
async function main() {
  await init();
  $("loading").hidden = true;
  for (const t of ["placement", "sim", "live"]) $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  $("tabs").addEventListener("keydown", (ev) => {
    const order = ["placement", "sim", "live"];
    const i = order.indexOf(activeTab);
    const j = ev.key === "ArrowRight" ? (i + 1) % 3 : ev.key === "ArrowLeft" ? (i + 2) % 3 : -1;
    if (j >= 0) { selectTab(order[j]); $(`tab-${order[j]}`).focus(); }
  });
  $("add-node").addEventListener("submit", addNode);
  $("ring-config").addEventListener("change", rebuildPlacement);
  $("lookup").addEventListener("submit", (ev) => {
    ev.preventDefault();
    try { clearError(); renderPlacement(); } catch (e) { showError(e); }
  });
  $("sc-fail").addEventListener("click", simAction(scenarios.fail));
  $("sc-write").addEventListener("click", simAction(scenarios.write));
  $("sc-recover").addEventListener("click", simAction(scenarios.recover));
  $("sc-cut").addEventListener("click", simAction(scenarios.cut));
  $("sc-write-both").addEventListener("click", simAction(scenarios.writeBoth));
  $("sc-heal").addEventListener("click", simAction(scenarios.heal));
  $("sc-join").addEventListener("click", simAction(scenarios.join));
  $("sc-leave").addEventListener("click", simAction(scenarios.leave));
  $("sc-run").addEventListener("click", simAction(scenarios.run));
  $("sc-reset").addEventListener("click", simAction(() => { resetSim(); message("Reset."); }));
  $("tl-prev").addEventListener("click", () => step(-1));
  $("tl-next").addEventListener("click", () => step(1));
  $("tl-live").addEventListener("click", () => { sim.cursor = -1; renderSim(); });
  $("tl-slider").addEventListener("input", (ev) => {
    const i = Number(ev.target.value);
    sim.cursor = i === sim.timeline.length - 1 ? -1 : i;
    renderSim();
  });
  $("live-form").addEventListener("submit", startLive);
  $("live-stop").addEventListener("click", () => { stopLive(); $("live-status").textContent = "Stopped."; });
  const start = new URLSearchParams(location.search).get("tab");
  selectTab(["placement", "sim", "live"].includes(start) ? start : "placement");
  document.body.dataset.ready = "true";
}

main().catch((e) => { $("loading").hidden = true; showError(e); });
