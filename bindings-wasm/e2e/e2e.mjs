// End-to-end test of the visualizer in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core). Serves bindings-wasm/web/ under /ui/ (as a ringkv node does) with a tiny HTTP
// server that also answers /ring and /cluster with documents shaped like host-native/src/api.rs
// (RingDoc, ClusterStatus) for live mode, clicks through every scenario and asserts on what the
// page shows. Screenshots go to target/wasm-e2e/.
import { createServer } from "node:http";
import { readFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, "../web");
const repo = path.resolve(here, "../..");
const shots = path.join(repo, "target/wasm-e2e");
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm", ".json": "application/json" };

// ----- live-mode fixtures: a 4-node cluster, n4 joining with partitions moving to it -----
let polls = 0;
function liveDocs() {
  polls += 1;
  const ids = ["n1", "n2", "n3", "n4"];
  const q = 32;
  const members = ids.map((id, i) => ({
    id, status: id === "n4" ? "joining" : "up", alive: id !== "n3", zone: ["a", "b", "c", "a"][i], capacity: 1,
    http_addr: `127.0.0.1:${8087 + i}`, peer_addr: `127.0.0.1:${8187 + i}`, partitions: id === "n4" ? 0 : [11, 11, 10][i],
  }));
  const partitions = Array.from({ length: q }, (_, p) => ({
    id: p, start: ((BigInt(p) << 123n)).toString(),
    replicas: [ids[p % 3], ids[(p + 1) % 3], ids[(p + 2) % 3]],
    moving_to: p % 8 === 0 ? ["n4"] : [],
  }));
  const ring = { cluster: "demo", node: "n1", version: 7, partition_count: q, target_n: 3, strategy: "partitions", members, partitions };
  const cluster = { cluster: "demo", node: "n1", claimant: "n1", ring_version: 7, members, hints_pending: 2 + polls,
    transfers_pending: 4, in_flight: 0, buckets: [] };
  return { ring, cluster };
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/ring" || url.pathname === "/cluster") {
    const docs = liveDocs();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(url.pathname === "/ring" ? docs.ring : docs.cluster));
  }
  // Like the node: /ui serves index.html, /ui/<file> the file.
  let rel = url.pathname === "/ui" ? "" : url.pathname.startsWith("/ui/") ? url.pathname.slice(4) : null;
  if (rel === null) { res.writeHead(404); return res.end("not found"); }
  if (rel === "") rel = "index.html";
  const file = path.resolve(web, decodeURIComponent(rel));
  if (!file.startsWith(web + path.sep)) { res.writeHead(404); return res.end(); }
  try {
    const body = await readFile(file);
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] || "application/octet-stream" });
    res.end(body);
  } catch { res.writeHead(404); res.end("not found"); }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

// The key position as core's key_position computes it: MD5(len(bucket) u32 BE ‖ bucket ‖ key).
function keyPosition(bucket, key) {
  const len = Buffer.alloc(4); len.writeUInt32BE(Buffer.byteLength(bucket));
  const digest = createHash("md5").update(len).update(bucket).update(key).digest("hex");
  return BigInt("0x" + digest).toString();
}

const profile = await mkdtemp(path.join(tmpdir(), "ringkv-e2e-"));
await mkdir(shots, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic"],
  viewport: { width: 1400, height: 1000 },
});
const failures = [];
const page = context.pages()[0] || await context.newPage();
page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) failures.push(`console error: ${m.text()}`); });
page.on("response", (r) => { if (r.status() >= 400) failures.push(`HTTP ${r.status()} for ${r.url()}`); });
page.setDefaultTimeout(20000);

const text = (sel) => page.locator(sel).innerText();
const count = (sel) => page.locator(sel).count();
const t0 = Date.now();
let stepName = "";
const step = (name) => { stepName = name; console.log(`· ${name}`); };

try {
  step("the page loads from /ui (redirected to /ui/) and the module starts");
  await page.goto(`${origin}/ui`);
  await page.waitForSelector("body[data-ready=true]");
  assert.equal(new URL(page.url()).pathname, "/ui/");
  assert.match(await page.locator("link[rel=stylesheet]").getAttribute("href"), /style\.css$/);
  assert.equal(await page.locator("#error").isHidden(), true, "no error shown");

  step("placement: 64 partitions coloured by owner, five nodes with capacity and zone");
  assert.equal(await count("#ring .partitions > g"), 64);
  assert.equal(await count("#members tbody tr"), 5);
  assert.match(await text("#members tbody tr[data-node=n4]"), /n4\s+2\s+a\s+\d+/);
  assert.match(await text("#legend"), /n1 \(zone a\): \d+/);
  assert.match(await page.locator("#ring-desc").textContent(), /Ring of 64 partitions\. n1 owns \d+/);
  const fills = new Set(await page.locator("#ring .partitions > g > path:first-of-type").evaluateAll((ps) => ps.map((p) => p.getAttribute("fill"))));
  assert.equal(fills.size, 5, "one colour per owner");

  step("placement: zones as a band in each owner's zone colour, with a zone legend");
  assert.equal(await count("#ring .zones > path"), 64);
  const zoneFills = new Set(await page.locator("#ring .zones > path").evaluateAll((ps) => ps.map((p) => p.getAttribute("fill"))));
  assert.equal(zoneFills.size, 3, "one colour per zone");
  const bands = await page.evaluate(() => [...document.querySelectorAll("#ring .partitions > g")].map((g) =>
    [g.dataset.owner, document.querySelector(`#ring .zones > path[data-partition="${g.dataset.partition}"]`)?.dataset.zone]));
  const zoneOfNode = { n1: "a", n2: "b", n3: "c", n4: "a", n5: "b" };
  assert.ok(bands.every(([owner, zone]) => zoneOfNode[owner] === zone), JSON.stringify(bands.slice(0, 6)));
  assert.match(await text("#legend"), /zone a: n1, n4/);
  assert.match(await page.locator("#ring-desc").textContent(), /Zones: a \(n1, n4\); b \(n2, n5\); c \(n3\)\./);

  step("a typed key shows its position and preference list");
  await page.fill("#key", "bob");
  await page.click("#lookup-button");
  assert.equal(await text("#key-position"), keyPosition("carts", "bob"));
  const pref = (await text("#key-preference")).split(", ");
  assert.equal(pref.length, 3);
  assert.equal(new Set(pref).size, 3, "no node twice in a preference list");
  const partition = Number((await text("#key-partition")).split(" ")[0]);
  assert.equal(BigInt(keyPosition("carts", "bob")) >> 122n, BigInt(partition));
  assert.equal(await page.locator("#key-marker").getAttribute("data-partition"), String(partition));

  step("adding a node moves a few partitions; modulo hashing would move most keys");
  await page.fill("#new-id", "n6");
  await page.fill("#new-zone", "c");
  await page.click("#add-node-button");
  const summary = await text("#move-summary");
  const moved = Number(/(\d+) of 64 partitions changed owner/.exec(summary)?.[1]);
  assert.ok(summary.startsWith("Adding n6") && moved > 0 && moved < 32, summary);
  assert.equal(await count("#ring .partitions > g.moved"), moved);
  const pct = async (scheme) => Number((await text(`.bar[data-scheme=${scheme}] > span:last-child`)).replace("%", ""));
  const [ringPct, moduloPct, tokensPct] = [await pct("ring"), await pct("modulo"), await pct("tokens")];
  assert.ok(ringPct < 30 && tokensPct < 40 && moduloPct > 70, `ring ${ringPct}%, tokens ${tokensPct}%, modulo ${moduloPct}%`);
  assert.equal(await count("#members tbody tr"), 6);
  await page.screenshot({ path: path.join(shots, "1-placement-add-node.png"), fullPage: true });
  await page.click("button[aria-label='Remove n3']");
  assert.match(await text("#move-summary"), /^Removing n3: \d+ of 64 partitions changed owner/);
  assert.equal(await count("#members tbody tr"), 5);

  step("failures: a replica fails, the write goes to a fallback with a hint");
  await page.click("#tab-sim");
  assert.equal(await count("#timeline > li"), 1);
  await page.click("#sc-fail");
  const downRows = page.locator("#sim-nodes tbody tr", { hasText: "no — down" });
  assert.equal(await downRows.count(), 1);
  const failed = await downRows.getAttribute("data-node");
  assert.match(await text("#timeline"), new RegExp(`sees ${failed} down`));
  await page.click("#sc-write");
  assert.match(await text("#sim-message"), new RegExp(`went to fallback n\\d, which keeps a hint for ${failed}`));
  const hint = await text("#hints li.hint");
  assert.match(hint, new RegExp(`n\\d holds a hint for ${failed}: carts/alice`));
  const holder = hint.split(" ")[0];
  assert.notEqual(Number(await text(`#sim-nodes tr[data-node=${holder}] td.hints`)), 0);

  step("recovery: the hint is handed back");
  await page.click("#sc-recover");
  assert.match(await text("#sim-message"), /hint was handed back/);
  assert.equal(await count("#hints li.hint"), 0);
  assert.match(await text(`#replicas tr[data-node=${failed}] td.values`), /"milk,eggs@\d+"/);
  await page.screenshot({ path: path.join(shots, "2-hinted-handoff.png"), fullPage: true });

  step("partition: both sides write, heal, siblings and anti-entropy repair");
  await page.click("#sc-cut");
  assert.match(await text("#sim-message"), /^Partitioned/);
  await page.click("#sc-write-both");
  assert.match(await text("#timeline > li:last-child"), /"milk,eggs" at n\d \(ok\) and "bread" at n\d \(ok\)/);
  await page.click("#sc-heal");
  assert.match(await text("#sim-message"), /Siblings: "(milk,eggs|bread)" and "(milk,eggs|bread)"/);
  const siblingRows = await page.locator("#replicas td.values", { hasText: "2 siblings" }).count();
  assert.ok(siblingRows >= 3, `every replica holds both siblings (${siblingRows})`);
  assert.match(await text("#timeline"), /anti-entropy of partition \d+ with n\d: \d+ differing, [1-9]\d* repaired/);
  await page.screenshot({ path: path.join(shots, "3-partition-siblings.png"), fullPage: true });

  step("gossip: a joining node spreads to every view; the timeline steps back through it");
  await page.click("#sc-join");
  const n6 = "#views tbody td:nth-child(7)"; // columns: view-of, n1..n5, n6
  assert.equal(await text("#views thead th:nth-child(7)"), "n6");
  assert.equal(await count("#views tbody tr"), 6);
  assert.equal(await page.locator(n6, { hasText: "unknown" }).count(), 0, "every view knows n6 at the end");
  assert.match(await text("#sim-message"), /6 of 6 nodes know n6/);
  const firstGossip = page.locator("#timeline > li", { hasText: "n6 starts and joins" });
  await firstGossip.locator("button").click();
  assert.match(await text("#tl-position"), /\(history\)/);
  assert.ok(await page.locator(n6, { hasText: "unknown" }).count() > 0, "right after the join some views do not know n6 yet");
  assert.equal(await page.locator("#sc-fail").isDisabled(), true, "actions wait while viewing history");
  await page.click("#tl-next");
  await page.click("#tl-next");
  await page.screenshot({ path: path.join(shots, "4-gossip-timeline.png"), fullPage: true });
  await page.click("#tl-live");
  assert.match(await text("#tl-position"), /\(now\)/);
  assert.ok(Number(await text("#sim-nodes tr[data-node=n6] td:nth-child(4)")) > 0, "n6 owns partitions");

  step("live mode: the cluster's ring, states, hints and moving partitions, refreshed");
  await page.click("#tab-live");
  assert.equal(await page.inputValue("#live-url"), origin, "defaults to the node serving /ui");
  await page.selectOption("#live-every", "1000");
  await page.click("#live-connect");
  await page.waitForSelector("#live-members tbody tr");
  assert.equal(await count("#ring .partitions > g"), 32);
  assert.match(await text("#live-members tr[data-node=n4]"), /n4\s+joining\s+yes\s+a\s+1\s+0/);
  assert.match(await text("#live-members tr[data-node=n3]"), /n3\s+up\s+no/);
  assert.match(await text("#live-moving"), /0 → n4; 8 → n4; 16 → n4; 24 → n4/);
  assert.equal(await text("#live-transfers"), "4");
  const hints1 = Number(await text("#live-hints"));
  await page.waitForFunction((h) => Number(document.getElementById("live-hints").textContent) > h, hints1);
  assert.match(await page.locator("#ring-desc").textContent(), /n3 owns 10 \(down\)/);
  await page.screenshot({ path: path.join(shots, "5-live.png"), fullPage: true });
  await page.click("#live-stop");

  step("bad input is an error message, not a crash");
  await page.click("#tab-placement");
  await page.fill("#new-id", "n1");
  await page.click("#add-node-button");
  assert.match(await text("#error"), /n1 is already a node/);
  // The bindings throw JS Errors with messages (the module is already initialised by the page).
  const messages = await page.evaluate(async () => {
    const m = await import("./pkg/ringkv_wasm.js");
    const attempt = (f) => { try { f(); return "no error"; } catch (e) { return `${e instanceof Error}: ${e.message}`; } };
    const sim = new m.Sim({ nodes: 3 });
    return [
      attempt(() => new m.Ring([{ id: "a", capacity: 0 }], 64, 3, "partitions", 16)),
      attempt(() => new m.Ring([{ id: "a" }], 48, 3, "partitions", 16)),
      attempt(() => new m.Sim({ nodes: 3, r: "most" })),
      attempt(() => sim.crash("n9")),
      attempt(() => sim.put("n1", "b", "k", "v", "not-a-context")),
      sim.put("n1", "b", "k", "v").ok,
    ];
  });
  assert.equal(messages[0], "true: invalid ring: member a has capacity 0");
  assert.match(messages[1], /^true: invalid ring: partition count 48 is not a power of two/);
  assert.match(messages[2], /^true: invalid argument: r = "most" is not a quorum/);
  assert.equal(messages[3], 'true: unknown node "n9": the nodes are n1, n2, n3');
  assert.match(messages[4], /^true: invalid context: /);
  assert.equal(messages[5], true);

  step("a simulator with zones: nodes placed round-robin, zone faults");
  const zoned = await page.evaluate(async () => {
    const m = await import("./pkg/ringkv_wasm.js");
    const sim = new m.Sim({ nodes: 6, seed: 3, zones: ["a", "b", "c"], wan_min_delay_ms: 20, wan_max_delay_ms: 60 });
    const zones = sim.nodes().map((n) => `${n.id}:${n.zone}`);
    const ringZones = sim.ringDoc().members.map((mm) => `${mm.id}:${mm.zone}`);
    sim.run(1000);
    // Before any fault: a quorum of 2 of the 3 zones' replicas needs a round trip between zones.
    const put = sim.put("n1", "carts", "zoe", "tea");
    const isolated = sim.isolateZone("c");
    sim.run(5000);
    const during = sim.put("n2", "carts", "zoe", "coffee", put.context).ok;
    const lost = sim.crashZone("c", true);
    const kinds = sim.events(0).map((e) => e.kind);
    sim.reconnectZone("c");
    sim.restartZone("c");
    sim.run(30000);
    let unknown = "no error";
    try { sim.isolateZone("d"); } catch (e) { unknown = e.message; }
    return { zones, ringZones, isolated, during, ok: put.ok, took: put.completed_at - put.invoked_at, lost, kinds, converged: sim.converged(), unknown };
  });
  assert.deepEqual(zoned.zones, ["n1:a", "n2:b", "n3:c", "n4:a", "n5:b", "n6:c"]);
  assert.deepEqual(zoned.ringZones, zoned.zones);
  assert.deepEqual(zoned.isolated, ["n3", "n6"]);
  assert.equal(zoned.during, true, "zones a and b write while c is cut off");
  assert.ok(zoned.ok && zoned.took >= 40, `a quorum write across zones took ${zoned.took} ms`);
  assert.deepEqual(zoned.lost, ["n3", "n6"]);
  assert.ok(zoned.kinds.includes("zone") && zoned.kinds.includes("disk_lost"), zoned.kinds.join(","));
  assert.equal(zoned.converged, true);
  assert.match(zoned.unknown, /unknown zone "d": the zones are a, b, c/);

  assert.deepEqual(failures, [], "no page or console errors");
  console.log(`e2e: all scenarios passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${path.relative(repo, shots)}/`);
} catch (e) {
  await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`e2e: FAILED at "${stepName}": ${e.stack || e}`);
  if (failures.length) console.error(failures.join("\n"));
  process.exitCode = 1;
} finally {
  await context.close();
  server.close();
  await rm(profile, { recursive: true, force: true });
}
