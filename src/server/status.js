// The status page's script: draws the facility from the server's event stream (/events).
//
// Every piece of text from the server reaches the document through textContent or an
// attribute set with setAttribute, never as HTML: owners and reasons are client text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// A SpiNN-5 board's outline in chip coordinates, relative to its Ethernet chip: six
// vertices of a hexagon of 48 chips. Boards z = 0, 1, 2 of triad (x, y) have their
// Ethernet chips at (12x, 12y) + (0,0), (8,4), (4,8); the outlines tile the plane.
const OUTLINE = [[0, 0], [4, 0], [8, 4], [8, 8], [4, 8], [0, 4]];
const Z_OFFSET = [[0, 0], [8, 4], [4, 8]];
const SCALE = 7; // pixels per chip

let status = null;        // the last state received
let clockOffsetMs = 0;    // server clock minus this browser's
let selected = null;      // [machine, x, y, z] of the clicked board

// Chip coordinates to screen: the skew that makes the hexagons regular, y upwards.
function toScreen(cx, cy) {
  return [cx - cy / 2, -cy * Math.sqrt(3) / 2];
}

// A job's colour: hues spread by the golden angle, so neighbouring ids differ.
function jobColour(id) {
  return "hsl(" + ((id * 137.508) % 360).toFixed(1) + ", 65%, 55%)";
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function duration(s) {
  if (s === null || s === undefined) return "";
  const neg = s < 0;
  s = Math.abs(Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const text = h ? h + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
  return neg ? "-" + text : text;
}

function nowUs() {
  return (Date.now() + clockOffsetMs) * 1000;
}

function boardLabel(m, b) {
  const [x, y, z] = b.logical;
  let text = m.name + " board (" + x + ", " + y + ", " + z + ")";
  if (b.physical) {
    const [c, f, bd] = b.physical;
    text += " · cabinet " + c + ", frame " + f + ", board " + bd;
  }
  if (b.ip) text += " · IP " + b.ip;
  text += " · " + b.state.replace("_", " ");
  if (b.drained && b.state !== "drained") text += " (drained: released when the job ends)";
  if (b.job !== null && b.job !== undefined) {
    text += " · job " + b.job;
    const job = status.facility.jobs.find(j => j.job_id === b.job);
    if (job) text += " (owner " + job.owner + ")";
  }
  return text;
}

function drawMachine(m) {
  const box = el("div", null, "machine");
  box.setAttribute("data-machine", m.name);
  const title = el("h3", m.name);
  title.style.margin = "0.2em 0";
  box.appendChild(title);
  box.appendChild(el("div", m.width + "×" + m.height + " triads · tags: " + m.tags.join(", ")));
  const svg = document.createElementNS(SVG, "svg");
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  const polys = [];
  for (const b of m.boards) {
    const [x, y, z] = b.logical;
    const ex = 12 * x + Z_OFFSET[z][0], ey = 12 * y + Z_OFFSET[z][1];
    const pts = OUTLINE.map(([dx, dy]) => toScreen(ex + dx, ey + dy));
    for (const [px, py] of pts) {
      minX = Math.min(minX, px); maxX = Math.max(maxX, px);
      minY = Math.min(minY, py); maxY = Math.max(maxY, py);
    }
    polys.push([b, pts]);
  }
  const pad = 1;
  svg.setAttribute("viewBox", (minX - pad) + " " + (minY - pad) + " " +
    (maxX - minX + 2 * pad) + " " + (maxY - minY + 2 * pad));
  svg.setAttribute("width", String(Math.round((maxX - minX + 2 * pad) * SCALE)));
  svg.setAttribute("height", String(Math.round((maxY - minY + 2 * pad) * SCALE)));
  for (const [b, pts] of polys) {
    const p = document.createElementNS(SVG, "polygon");
    p.setAttribute("points", pts.map(([px, py]) => px.toFixed(2) + "," + py.toFixed(2)).join(" "));
    p.setAttribute("class", "board " + b.state);
    p.setAttribute("data-x", String(b.logical[0]));
    p.setAttribute("data-y", String(b.logical[1]));
    p.setAttribute("data-z", String(b.logical[2]));
    p.setAttribute("data-state", b.state);
    if (b.job !== null && b.job !== undefined) {
      p.setAttribute("data-job", String(b.job));
      if (b.state !== "powering_off") p.style.fill = jobColour(b.job);
    }
    if (selected && selected[0] === m.name && selected[1] === b.logical[0] &&
        selected[2] === b.logical[1] && selected[3] === b.logical[2]) {
      p.classList.add("selected");
    }
    const label = boardLabel(m, b);
    const t = document.createElementNS(SVG, "title");
    t.textContent = label;
    p.appendChild(t);
    p.addEventListener("mouseenter", () => { document.getElementById("details").textContent = label; });
    p.addEventListener("click", () => {
      selected = [m.name, b.logical[0], b.logical[1], b.logical[2]];
      document.getElementById("details").textContent = label;
      for (const s of document.querySelectorAll(".board.selected")) s.classList.remove("selected");
      p.classList.add("selected");
    });
    svg.appendChild(p);
  }
  box.appendChild(svg);
  return box;
}

function renderJobs() {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  const jobs = status.facility.jobs;
  if (jobs.length === 0) {
    const tr = el("tr");
    const td = el("td", "no jobs", "empty");
    td.colSpan = 8;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const j of jobs) {
    const tr = el("tr");
    tr.setAttribute("data-job", String(j.job_id));
    const id = el("td", null, "num");
    const sw = el("span", null, "swatch");
    sw.style.background = jobColour(j.job_id);
    id.appendChild(sw);
    id.appendChild(document.createTextNode(String(j.job_id)));
    tr.appendChild(id);
    tr.appendChild(el("td", j.owner, "owner"));
    tr.appendChild(el("td", j.state, "state"));
    tr.appendChild(el("td", j.machine || "", "on-machine"));
    const boards = j.boards.length ? j.boards.length + ": " +
      j.boards.map(b => "(" + b.join(",") + ")").join(" ") : "";
    tr.appendChild(el("td", boards, "boards"));
    tr.appendChild(el("td", j.power === null ? "" : j.power ? "on" : "off", "power"));
    tr.appendChild(el("td", "", "num age"));
    tr.appendChild(el("td", "", "num left"));
    body.appendChild(tr);
  }
  tickTimes();
}

// Age and time left move with the clock between updates.
function tickTimes() {
  if (!status) return;
  renderJournal();
  const now = nowUs();
  for (const j of status.facility.jobs) {
    const tr = document.querySelector('#jobs tr[data-job="' + j.job_id + '"]');
    if (!tr) continue;
    tr.querySelector(".age").textContent = duration((now - j.start_time_us) / 1e6);
    tr.querySelector(".left").textContent = j.keepalive_until_us === null ? "never" :
      duration((j.keepalive_until_us - now) / 1e6);
  }
}

function renderQueues() {
  const div = document.getElementById("queues");
  div.replaceChildren();
  const owners = new Map(status.facility.jobs.map(j => [j.job_id, j.owner]));
  for (const m of status.facility.machines) {
    const sec = el("div");
    sec.setAttribute("data-machine", m.name);
    sec.appendChild(el("strong", m.name));
    if (m.queue.length === 0) {
      sec.appendChild(el("span", " — nothing queued", "empty"));
    } else {
      const ol = el("ol", null, "queue");
      m.queue.forEach((id, i) => {
        const li = el("li", "job " + id + " (" + (owners.get(id) || "?") + ")");
        li.setAttribute("data-job", String(id));
        li.setAttribute("data-position", String(i + 1));
        ol.appendChild(li);
      });
      sec.appendChild(ol);
    }
    div.appendChild(sec);
  }
}

function renderEnded() {
  const body = document.querySelector("#ended tbody");
  body.replaceChildren();
  for (const e of status.ended) {
    const tr = el("tr");
    tr.setAttribute("data-job", String(e.job_id));
    tr.appendChild(el("td", e.job_id, "num"));
    tr.appendChild(el("td", e.reason, "reason"));
    tr.appendChild(el("td", e.text === null ? "" : e.text, "text"));
    tr.appendChild(el("td", duration((nowUs() - e.ended_us) / 1e6) + " ago"));
    body.appendChild(tr);
  }
}

// While the journal cannot be written the server refuses every change (keepalives are
// still answered): say so above everything else, with how long it has lasted.
function renderJournal() {
  const banner = document.getElementById("journal");
  const j = status.journal;
  banner.hidden = !(j && j.failing);
  if (banner.hidden) return;
  banner.textContent = "The server cannot write its journal (for " +
    duration((nowUs() - j.since_us) / 1e6) + "): it refuses new jobs and every other " +
    "change until it can; keepalives are still answered. The server's log says why.";
}

function render() {
  renderJournal();
  const machines = document.getElementById("machines");
  machines.replaceChildren(...status.facility.machines.map(drawMachine));
  renderJobs();
  renderQueues();
  renderEnded();
  document.getElementById("version").textContent = status.version;
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/events");
  source.addEventListener("facility", ev => {
    status = JSON.parse(ev.data);
    clockOffsetMs = status.sent_us / 1000 - Date.now();
    render();
    conn.textContent = "live";
    conn.className = "live";
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
  });
  source.onerror = () => {
    // EventSource reconnects by itself (the server asks for a retry after 1 s)...
    conn.textContent = "reconnecting…";
    conn.className = "down";
    // ...unless the server refused the stream (too many pages open): try again later.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
  };
}

setInterval(tickTimes, 1000);
connect();
