// segrs click-to-segment page: upload an image once (the server caches its embedding), then
// every click, shift-click or box asks the server's mask decoder for masks and draws them.
"use strict";

const $ = (id) => document.getElementById(id);
const photo = $("photo"), maskCanvas = $("mask"), marks = $("marks");
const MASK_RGB = [30, 144, 255];

const state = {
  imageId: null, width: 0, height: 0, bitmap: null, fileName: "image",
  points: [], box: null, history: [],
  result: null, selected: 0, auto: null,
  seq: 0, drawnSeq: 0, lastRequest: null, busy: false,
};
// Read by the browser test and handy in the console.
window.segrs = state;

function token() { return localStorage.getItem("segrs-token") || ""; }

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = Object.assign({}, options.headers || {});
    if (token()) headers["Authorization"] = "Bearer " + token();
    const r = await fetch(path, Object.assign({}, options, { headers }));
    if (r.status === 401 && attempt === 0) {
      const t = prompt("This server needs a token:");
      if (t === null) throw new Error("a token is needed");
      localStorage.setItem("segrs-token", t.trim());
      continue;
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const msg = body && body.error ? body.error.message : r.status + " " + r.statusText;
      throw new Error(msg);
    }
    return body;
  }
}

function status(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

function progress(fraction) {
  $("progress").hidden = fraction === null;
  if (fraction !== null) $("bar").style.width = (100 * fraction).toFixed(1) + "%";
}

// COCO compressed RLE (pycocotools' string form) -> column-major run lengths.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// A COCO RLE -> row-major 0/1 bytes.
function decodeMask(seg) {
  const [h, w] = seg.size;
  const out = new Uint8Array(h * w);
  let i = 0, v = 0;
  for (const n of rleCounts(seg.counts)) {
    if (v) {
      for (let j = i; j < i + n; j++) {
        const x = Math.floor(j / h), y = j - x * h;
        out[y * w + x] = 1;
      }
    }
    i += n;
    v = 1 - v;
  }
  return out;
}

function clearCanvas(c) { c.getContext("2d").clearRect(0, 0, c.width, c.height); }

// Masks onto the mask layer: each mask's pixels filled with its colour (alpha 0.5).
function paintMasks(list) {
  const ctx = maskCanvas.getContext("2d");
  const img = ctx.createImageData(state.width, state.height);
  for (const { mask, rgb } of list) {
    for (let i = 0; i < mask.length; i++) {
      if (!mask[i]) continue;
      img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1]; img.data[4 * i + 2] = rgb[2];
      img.data[4 * i + 3] = 128;
    }
  }
  ctx.putImageData(img, 0, 0);
}

// Contours (mask pixels with a 4-neighbour outside) and prompts onto the marks layer.
function paintMarks(contours, drag) {
  const ctx = marks.getContext("2d");
  clearCanvas(marks);
  const { width: w, height: h } = state;
  if (contours.length) {
    const img = ctx.createImageData(w, h);
    for (const m of contours) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const i = y * w + x;
          if (!m[i]) continue;
          const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
            !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w];
          if (edge) { img.data.fill(255, 4 * i, 4 * i + 4); }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  const scale = state.width / marks.getBoundingClientRect().width || 1;
  const r = 6 * scale;
  for (const p of state.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = 2 * scale;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  const box = drag || state.box;
  if (box) {
    ctx.lineWidth = 2 * scale;
    ctx.strokeStyle = "#22c55e";
    ctx.setLineDash([6 * scale, 4 * scale]);
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    ctx.setLineDash([]);
  }
}

function colour(i) {
  // Distinct hues by the golden angle.
  const h = (i * 137.508) % 360, s = 0.75, l = 0.55;
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function redraw() {
  if (state.auto) {
    const sorted = state.auto.masks.slice().sort((a, b) => b.area - a.area);
    paintMasks(sorted.map((m, i) => ({ mask: m.mask, rgb: colour(i) })));
    paintMarks([]);
  } else if (state.result && state.result.masks.length) {
    const m = state.result.masks[state.selected];
    paintMasks([{ mask: m.mask, rgb: MASK_RGB }]);
    paintMarks([m.mask]);
  } else {
    clearCanvas(maskCanvas);
    paintMarks([]);
  }
  const has = !!(state.auto || (state.result && state.result.masks.length));
  $("dl-mask").disabled = $("dl-cutout").disabled = $("dl-coco").disabled = !has;
  $("undo").disabled = state.history.length === 0;
  $("clear").disabled = !(state.points.length || state.box || state.auto);
}

function showCandidates() {
  const box = $("candidates");
  box.textContent = "";
  if (!state.result) return;
  state.result.masks.forEach((m, i) => {
    const row = document.createElement("div");
    row.className = "candidate" + (i === state.selected ? " selected" : "");
    // A small copy of the mask (nearest pixel), white on black.
    const c = document.createElement("canvas");
    const tw = 144, th = Math.max(1, Math.round(state.height * tw / state.width));
    c.width = tw; c.height = th;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(tw, th);
    for (let y = 0; y < th; y++) {
      const sy = Math.min(state.height - 1, Math.floor((y + 0.5) * state.height / th));
      for (let x = 0; x < tw; x++) {
        const sx = Math.min(state.width - 1, Math.floor((x + 0.5) * state.width / tw));
        const k = y * tw + x, v = m.mask[sy * state.width + sx] ? 255 : 0;
        img.data[4 * k] = img.data[4 * k + 1] = img.data[4 * k + 2] = v;
        img.data[4 * k + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    const label = document.createElement("span");
    label.textContent = `mask ${i + 1} · score ${m.score.toFixed(3)}`;
    row.append(c, label);
    row.onclick = () => { state.selected = i; showCandidates(); redraw(); };
    box.append(row);
  });
}

async function predict() {
  state.auto = null;
  if (!state.points.length && !state.box) {
    state.result = null;
    showCandidates(); redraw();
    status("Click on the image to segment.");
    return;
  }
  const seq = ++state.seq;
  const req = {
    image_id: state.imageId,
    points: state.points.map((p) => [p.x, p.y]),
    labels: state.points.map((p) => p.label),
    multimask: state.points.length === 1 && !state.box,
  };
  if (state.box) req.box = state.box;
  state.lastRequest = req;
  const t = performance.now();
  try {
    const r = await api("/v1/sam/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(req),
    });
    if (seq !== state.seq) return; // a newer prompt has been sent
    r.masks.forEach((m) => { m.mask = decodeMask(m.segmentation); });
    state.result = r;
    state.selected = r.masks.reduce((b, m, i, a) => (m.score > a[b].score ? i : b), 0);
    showCandidates();
    redraw();
    state.drawnSeq = seq;
    const best = r.masks[state.selected];
    status(`score ${best.score.toFixed(3)} · ${Math.round(performance.now() - t)} ms (decoder ${r.decoder_ms.toFixed(0)} ms)`);
  } catch (e) {
    if (seq === state.seq) status(e.message, true);
  }
}

function pushHistory() {
  state.history.push({ points: state.points.slice(), box: state.box && state.box.slice() });
}

// Pointer position in image pixels.
function imagePoint(ev) {
  const r = marks.getBoundingClientRect();
  const x = (ev.clientX - r.left) * state.width / r.width;
  const y = (ev.clientY - r.top) * state.height / r.height;
  return [Math.min(Math.max(x, 0), state.width), Math.min(Math.max(y, 0), state.height)];
}

let drag = null;
marks.addEventListener("contextmenu", (ev) => ev.preventDefault());
marks.addEventListener("pointerdown", (ev) => {
  if (!state.imageId) return;
  marks.setPointerCapture(ev.pointerId);
  drag = { start: imagePoint(ev), screen: [ev.clientX, ev.clientY], button: ev.button, shift: ev.shiftKey, moved: false };
});
marks.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  if (Math.hypot(ev.clientX - drag.screen[0], ev.clientY - drag.screen[1]) > 5) drag.moved = true;
  if (drag.moved) {
    const [x, y] = imagePoint(ev), [x0, y0] = drag.start;
    paintMarks(state.result && !state.auto ? [state.result.masks[state.selected].mask] : [],
      [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)]);
  }
});
marks.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  const [x, y] = imagePoint(ev), [x0, y0] = d.start;
  pushHistory();
  if (d.moved) {
    state.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  } else {
    state.points.push({ x: x0, y: y0, label: d.shift || d.button === 2 ? 0 : 1 });
  }
  predict();
});

function undo() {
  const h = state.history.pop();
  if (!h) return;
  state.points = h.points;
  state.box = h.box;
  predict();
}

function clearPrompts() {
  if (state.points.length || state.box) pushHistory();
  state.points = [];
  state.box = null;
  predict();
}

$("undo").onclick = undo;
$("clear").onclick = clearPrompts;
document.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
});

async function everything() {
  $("everything").disabled = true;
  status("Segmenting everything…");
  progress(0);
  try {
    const job = await api("/v1/sam/auto", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_id: state.imageId }),
    });
    for (;;) {
      await new Promise((r) => setTimeout(r, 300));
      const j = await api(job.poll);
      if (j.total) progress(j.done / j.total);
      if (j.state === "failed") throw new Error(j.error);
      if (j.state === "done") {
        j.masks.forEach((m) => { m.mask = decodeMask(m.segmentation); });
        state.auto = { masks: j.masks };
        state.result = null;
        showCandidates();
        redraw();
        status(`${j.masks.length} masks in ${j.elapsed_s.toFixed(1)} s`);
        break;
      }
    }
  } catch (e) {
    status(e.message, true);
  } finally {
    progress(null);
    $("everything").disabled = false;
  }
}
$("everything").onclick = everything;

async function openImage(file) {
  if (!file) return;
  status(`Encoding ${file.name}…`);
  progress(null);
  state.busy = true;
  try {
    const [bitmap, info] = await Promise.all([
      createImageBitmap(file, { imageOrientation: "none" }),
      api("/v1/images", { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } }),
    ]);
    if (bitmap.width !== info.width || bitmap.height !== info.height) {
      throw new Error(`the browser reads ${bitmap.width}x${bitmap.height}, the server ${info.width}x${info.height}`);
    }
    Object.assign(state, {
      imageId: info.image_id, width: info.width, height: info.height, bitmap,
      fileName: file.name.replace(/\.[^.]*$/, "") || "image",
      points: [], box: null, history: [], result: null, auto: null,
    });
    for (const c of [photo, maskCanvas, marks]) { c.width = info.width; c.height = info.height; }
    photo.getContext("2d").drawImage(bitmap, 0, 0);
    $("drop").hidden = true;
    $("stage").hidden = false;
    $("everything").disabled = false;
    showCandidates();
    redraw();
    status(`${info.width}x${info.height}${info.cached ? " (cached)" : ""}: click on the image to segment.`);
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy = false;
  }
}

$("file").addEventListener("change", (ev) => openImage(ev.target.files[0]));
for (const el of [$("drop"), document.body]) {
  el.addEventListener("dragover", (ev) => { ev.preventDefault(); $("drop").classList.add("over"); });
  el.addEventListener("dragleave", () => $("drop").classList.remove("over"));
  el.addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("drop").classList.remove("over");
    openImage(ev.dataTransfer.files[0]);
  });
}

function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function currentMasks() {
  if (state.auto) return state.auto.masks;
  return state.result ? [state.result.masks[state.selected]] : [];
}

function unionMask() {
  const u = new Uint8Array(state.width * state.height);
  for (const m of currentMasks()) for (let i = 0; i < u.length; i++) u[i] |= m.mask[i];
  return u;
}

function canvasBlob(fill) {
  const c = document.createElement("canvas");
  c.width = state.width; c.height = state.height;
  const ctx = c.getContext("2d");
  fill(ctx);
  return new Promise((r) => c.toBlob(r, "image/png"));
}

$("dl-mask").onclick = async () => {
  const u = unionMask();
  const blob = await canvasBlob((ctx) => {
    const img = ctx.createImageData(state.width, state.height);
    for (let i = 0; i < u.length; i++) {
      img.data.fill(u[i] ? 255 : 0, 4 * i, 4 * i + 3);
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  });
  download(state.fileName + "_mask.png", blob);
};

$("dl-cutout").onclick = async () => {
  const u = unionMask();
  const blob = await canvasBlob((ctx) => {
    ctx.drawImage(state.bitmap, 0, 0);
    const img = ctx.getImageData(0, 0, state.width, state.height);
    for (let i = 0; i < u.length; i++) img.data[4 * i + 3] = u[i] ? 255 : 0;
    ctx.putImageData(img, 0, 0);
  });
  download(state.fileName + "_cutout.png", blob);
};

$("dl-coco").onclick = () => {
  const annotations = currentMasks().map((m, i) => ({
    id: i + 1, image_id: 1, category_id: 1, iscrowd: 0,
    segmentation: m.segmentation, area: m.area, bbox: m.bbox,
    score: m.score !== undefined ? m.score : m.predicted_iou,
  }));
  const coco = {
    images: [{ id: 1, file_name: state.fileName, width: state.width, height: state.height }],
    categories: [{ id: 1, name: "object" }],
    annotations,
  };
  download(state.fileName + "_coco.json", new Blob([JSON.stringify(coco)], { type: "application/json" }));
};

fetch("/healthz").then((r) => r.json()).then((h) => {
  $("model").textContent = h.models.sam ? h.models.sam : "no SAM model loaded";
}).catch(() => {});
