// fastmlp draw-a-digit page: no libraries, works offline.
"use strict";

(function () {
  const SEND_SIZE = 140;       // the pad's ink is averaged down to SEND_SIZE x SEND_SIZE
  const LINE_WIDTH = 20;       // in pad pixels (the pad is 280 x 280)
  const DRAW_INTERVAL_MS = 200; // while drawing, predict at most this often

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d", { willReadFrequently: true });
  const clearButton = document.getElementById("clear");
  const prediction = document.getElementById("prediction");
  const statusLine = document.getElementById("status");
  const answerHint = document.getElementById("answer-hint");
  const probs = document.getElementById("probs");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const curves = document.getElementById("curves");
  const curvesNote = document.getElementById("curves-note");
  const modelInfo = document.getElementById("model-info");
  const netKind = document.getElementById("net-kind");
  const mapsBox = document.getElementById("maps-box");
  const mapsCanvas = document.getElementById("maps");
  const mapsCtx = mapsCanvas.getContext("2d");
  const mapsNote = document.getElementById("maps-note");

  // ------------------------------------------------------------------ probability bars
  const rows = [];
  for (let d = 0; d < 10; d++) {
    const row = document.createElement("div");
    row.className = "prob";
    row.dataset.digit = String(d);
    const label = document.createElement("span");
    label.className = "digit";
    label.textContent = String(d);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = "";
    row.append(label, bar, pct);
    probs.appendChild(row);
    rows.push({ row, fill, pct });
  }

  // ------------------------------------------------------------------ drawing
  let drawing = false;
  let activePointer = null;
  let last = null;
  let hasInk = false;

  function setupPen() {
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#111";
    ctx.fillStyle = "#111";
  }
  setupPen();

  function toPad(e) {
    const r = pad.getBoundingClientRect();
    // clientWidth excludes the border; the drawing surface starts inside it.
    const bx = (r.width - pad.clientWidth) / 2;
    const by = (r.height - pad.clientHeight) / 2;
    return {
      x: (e.clientX - r.left - bx) * (pad.width / pad.clientWidth),
      y: (e.clientY - r.top - by) * (pad.height / pad.clientHeight),
    };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function segment(a, b) {
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (e) => {
    if (drawing || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    drawing = true;
    activePointer = e.pointerId;
    try { pad.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events */ }
    last = toPad(e);
    dot(last);
    hasInk = true;
    schedulePredict();
  });

  pad.addEventListener("pointermove", (e) => {
    if (!drawing || e.pointerId !== activePointer) return;
    e.preventDefault();
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = toPad(ev);
      segment(last, p);
      last = p;
    }
    schedulePredict();
  });

  function endStroke(e) {
    if (!drawing || e.pointerId !== activePointer) return;
    drawing = false;
    activePointer = null;
    last = null;
    predictNow();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("contextmenu", (e) => e.preventDefault());

  function clearAll() {
    drawing = false;
    activePointer = null;
    hasInk = false;
    cancelScheduled();
    requestSeq++; // any answer still on its way is now stale
    ctx.clearRect(0, 0, pad.width, pad.height);
    showEmpty("Draw a digit in the box.");
  }
  clearButton.addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") clearAll();
  });

  // ------------------------------------------------------------------ pixels out
  function padPixels() {
    const w = pad.width, h = pad.height;
    const alpha = ctx.getImageData(0, 0, w, h).data;
    const out = [];
    let any = false;
    for (let i = 0; i < SEND_SIZE; i++) {
      const y0 = Math.floor((i * h) / SEND_SIZE), y1 = Math.floor(((i + 1) * h) / SEND_SIZE);
      const row = new Array(SEND_SIZE);
      for (let j = 0; j < SEND_SIZE; j++) {
        const x0 = Math.floor((j * w) / SEND_SIZE), x1 = Math.floor(((j + 1) * w) / SEND_SIZE);
        let sum = 0, n = 0;
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) { sum += alpha[(y * w + x) * 4 + 3]; n++; }
        }
        const v = n ? Math.round((sum / n / 255) * 1000) / 1000 : 0;
        if (v > 0) any = true;
        row[j] = v;
      }
      out.push(row);
    }
    return any ? out : null;
  }

  // ------------------------------------------------------------------ predict
  let requestSeq = 0;
  let timer = null;
  let lastSent = 0;

  function cancelScheduled() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
  }

  function schedulePredict() {
    if (timer !== null) return;
    const wait = Math.max(0, DRAW_INTERVAL_MS - (performance.now() - lastSent));
    timer = setTimeout(() => { timer = null; predictNow(); }, wait);
  }

  async function predictNow() {
    cancelScheduled();
    lastSent = performance.now();
    const pixels = hasInk ? padPixels() : null;
    const seq = ++requestSeq;
    if (!pixels) { showEmpty("Draw a digit in the box."); return; }
    prediction.dataset.status = "pending";
    let reply, body;
    try {
      reply = await fetch("/api/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ pixels }),
      });
      body = await reply.json();
    } catch (err) {
      if (seq === requestSeq) showError("Could not reach the server: " + err.message);
      return;
    }
    if (seq !== requestSeq) return; // a newer drawing has been sent since
    if (!reply.ok) { showError(body && body.error ? body.error : "HTTP " + reply.status); return; }
    showResult(body);
  }

  // ------------------------------------------------------------------ results
  function showEmpty(message) {
    prediction.textContent = "–";
    prediction.dataset.status = "empty";
    statusLine.textContent = message;
    statusLine.classList.remove("error");
    showHint(null);
    for (const r of rows) {
      r.fill.style.width = "0%";
      r.pct.textContent = "";
      r.row.classList.remove("top");
    }
    seenCtx.clearRect(0, 0, seen.width, seen.height);
    blankMaps();
  }

  // The server's hint when the answer means little (a drawing unlike any digit, or no
  // digit getting half the probability); null otherwise.
  function showHint(text) {
    answerHint.textContent = text || "";
    answerHint.hidden = !text;
  }

  function showError(message) {
    showHint(null);
    prediction.textContent = "?";
    prediction.dataset.status = "error";
    statusLine.textContent = message;
    statusLine.classList.add("error");
  }

  function showResult(res) {
    const p = res.probabilities;
    prediction.textContent = String(res.label);
    prediction.dataset.status = "ready";
    statusLine.textContent = "confidence " + (100 * p[res.label]).toFixed(1) + " %";
    statusLine.classList.remove("error");
    showHint(res.hint);
    rows.forEach((r, d) => {
      const v = d < p.length ? p[d] : 0;
      r.fill.style.width = (100 * v).toFixed(1) + "%";
      r.pct.textContent = (100 * v).toFixed(1) + "%";
      r.row.classList.toggle("top", d === res.label);
    });
    drawSeen(res.input);
    drawMaps(res.feature_maps);
  }

  function drawSeen(img) {
    const n = img.length, m = img[0].length;
    const data = seenCtx.createImageData(m, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < m; j++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, img[i][j])));
        const k = (i * m + j) * 4;
        data.data[k] = data.data[k + 1] = data.data[k + 2] = v;
        data.data[k + 3] = 255;
      }
    }
    seenCtx.putImageData(data, 0, 0);
  }

  // ------------------------------------------------------------------ feature maps
  // A convolutional model's answer carries its first conv block's maps (see server.py):
  // shape [n, h, w], one uint8 per value in base64, each map scaled to its own range.
  const MAP_GAP = 2; // map pixels between grid cells
  let mapsGrid = null; // {n, h, w, cols, rows} of the last maps drawn

  function gridFor(n, h, w) {
    const cols = n <= 4 ? n : n <= 16 ? 4 : 8;
    return { n, h, w, cols, rows: Math.ceil(n / cols) };
  }

  function cellOrigin(g, k) {
    return { x: (k % g.cols) * (g.w + MAP_GAP), y: Math.floor(k / g.cols) * (g.h + MAP_GAP) };
  }

  function blankMaps() {
    if (!mapsGrid) return;
    mapsCtx.clearRect(0, 0, mapsCanvas.width, mapsCanvas.height);
    mapsCtx.fillStyle = "#000";
    for (let k = 0; k < mapsGrid.n; k++) {
      const o = cellOrigin(mapsGrid, k);
      mapsCtx.fillRect(o.x, o.y, mapsGrid.w, mapsGrid.h);
    }
    mapsCanvas.dataset.maps = "0";
  }

  function drawMaps(fm) {
    const ok = fm && Array.isArray(fm.shape) && fm.shape.length === 3 && typeof fm.data === "string";
    if (!ok) { mapsBox.hidden = true; mapsGrid = null; return; }
    const [n, h, w] = fm.shape;
    const bytes = atob(fm.data);
    if (!(n > 0 && h > 0 && w > 0) || bytes.length !== n * h * w) { mapsBox.hidden = true; return; }
    const g = gridFor(n, h, w);
    const W = g.cols * w + (g.cols - 1) * MAP_GAP, H = g.rows * h + (g.rows - 1) * MAP_GAP;
    if (mapsCanvas.width !== W || mapsCanvas.height !== H) {
      mapsCanvas.width = W;
      mapsCanvas.height = H;
    }
    mapsGrid = g;
    mapsBox.hidden = false;
    mapsCtx.clearRect(0, 0, W, H);
    const img = mapsCtx.createImageData(w, h);
    for (let k = 0; k < n; k++) {
      const base = k * h * w;
      for (let i = 0; i < h * w; i++) {
        const v = bytes.charCodeAt(base + i);
        img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
        img.data[4 * i + 3] = 255;
      }
      const o = cellOrigin(g, k);
      mapsCtx.putImageData(img, o.x, o.y);
    }
    mapsCanvas.dataset.maps = String(n);
    const shown = fm.channels > n ? "the first " + n + " of " + fm.channels : String(n);
    const size = fm.step > 1 ? " (1 in " + fm.step + " per side)" : "";
    mapsNote.textContent = shown + " maps of " + h + " × " + w + size +
      (typeof fm.name === "string" ? " · " + fm.name : "") + " · each scaled to its own range";
  }

  // ------------------------------------------------------------------ training curves
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => s >= raw) || 10 * mag;
    const ticks = [];
    for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) ticks.push(t);
    return { ticks, step };
  }

  function finite(xs) { return (xs || []).filter((v) => typeof v === "number" && isFinite(v)); }

  function plotPanel(g, box, title, series, asPercent) {
    const { x, y, w, h } = box;
    const all = series.flatMap((s) => finite(s.values));
    const epochs = Math.max(...series.map((s) => (s.values || []).length), 1);
    g.fillStyle = "#16181d";
    g.font = "600 13px system-ui, sans-serif";
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText(title, x, y - 10);
    if (!all.length) {
      g.fillStyle = "#667085";
      g.font = "12px system-ui, sans-serif";
      g.fillText("not recorded", x + 8, y + h / 2);
      return;
    }
    let lo = Math.min(...all), hi = Math.max(...all);
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 0.05;
    lo -= pad; hi += pad;
    if (asPercent) { lo = Math.max(0, lo); hi = Math.min(1, hi); }
    else if (Math.min(...all) >= 0) { lo = Math.max(0, lo); }
    const { ticks, step } = niceTicks(lo, hi, 4);
    const scaled = asPercent ? 100 * step : step;
    let decimals = 0; // just enough to tell the ticks apart
    while (decimals < 6 && Math.abs(scaled * 10 ** decimals - Math.round(scaled * 10 ** decimals)) > 1e-6) decimals++;
    lo = Math.min(lo, ticks[0]); hi = Math.max(hi, ticks[ticks.length - 1]);
    const px = (i) => x + (epochs === 1 ? w / 2 : (i * w) / (epochs - 1));
    const py = (v) => y + h - ((v - lo) / (hi - lo)) * h;

    // grid and y labels
    g.strokeStyle = "#e3e6ea";
    g.lineWidth = 1;
    g.fillStyle = "#667085";
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const t of ticks) {
      const yy = Math.round(py(t)) + 0.5;
      g.beginPath(); g.moveTo(x, yy); g.lineTo(x + w, yy); g.stroke();
      const label = asPercent ? (100 * t).toFixed(decimals) + "%" : t.toFixed(decimals);
      g.fillText(label, x - 6, yy);
    }
    // x labels: epochs 1..N
    g.textAlign = "center";
    g.textBaseline = "top";
    const xstep = Math.max(1, Math.ceil(epochs / 8));
    for (let i = 0; i < epochs; i += xstep) g.fillText(String(i + 1), px(i), y + h + 6);
    g.fillText("epoch", x + w / 2, y + h + 20);
    // axes
    g.strokeStyle = "#9aa4b2";
    g.beginPath(); g.moveTo(x, y); g.lineTo(x, y + h); g.lineTo(x + w, y + h); g.stroke();

    for (const s of series) {
      const vals = s.values || [];
      g.strokeStyle = s.color;
      g.fillStyle = s.color;
      g.lineWidth = 2;
      g.setLineDash(s.dash || []);
      g.beginPath();
      let pen = false;
      vals.forEach((v, i) => {
        if (typeof v !== "number" || !isFinite(v)) { pen = false; return; }
        if (pen) g.lineTo(px(i), py(v)); else g.moveTo(px(i), py(v));
        pen = true;
      });
      g.stroke();
      g.setLineDash([]);
      vals.forEach((v, i) => {
        if (typeof v !== "number" || !isFinite(v)) return;
        g.beginPath(); g.arc(px(i), py(v), 2.5, 0, 2 * Math.PI); g.fill();
      });
    }
  }

  function drawCurves(history) {
    const dpr = window.devicePixelRatio || 1;
    const W = 720, H = 260;
    curves.width = W * dpr;
    curves.height = H * dpr;
    const g = curves.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const has = (k) => finite(history && history[k]).length > 0;
    if (!history || !["loss", "accuracy", "val_loss", "val_accuracy"].some(has)) {
      g.fillStyle = "#667085";
      g.font = "14px system-ui, sans-serif";
      g.textAlign = "center";
      g.fillText("No training history.", W / 2, H / 2);
      curvesNote.textContent = "This model has no training history saved with it.";
      return;
    }
    const train = { color: "#2563eb", label: "train" };
    const val = { color: "#f97316", label: "validation", dash: [6, 4] };
    const top = 34, h = H - top - 44, w = (W - 3 * 56) / 2;
    plotPanel(g, { x: 56, y: top, w, h }, "loss", [
      { ...train, values: history.loss }, { ...val, values: history.val_loss },
    ], false);
    plotPanel(g, { x: 56 * 2 + w + 12, y: top, w: w - 12, h }, "accuracy", [
      { ...train, values: history.accuracy }, { ...val, values: history.val_accuracy },
    ], true);
    // legend
    g.font = "12px system-ui, sans-serif";
    g.textBaseline = "middle";
    g.textAlign = "left";
    const shown = [];
    if (has("loss") || has("accuracy")) shown.push(train);
    if (has("val_loss") || has("val_accuracy")) shown.push(val);
    let lx = W - 100 * shown.length;
    for (const s of shown) {
      g.strokeStyle = s.color; g.lineWidth = 2; g.setLineDash(s.dash || []);
      g.beginPath(); g.moveTo(lx, 12); g.lineTo(lx + 22, 12); g.stroke();
      g.setLineDash([]);
      g.fillStyle = "#16181d"; g.fillText(s.label, lx + 28, 12);
      lx += 100;
    }
    const acc = finite(history.val_accuracy).length ? history.val_accuracy : history.accuracy;
    const fin = finite(acc);
    const secs = finite(history.seconds).reduce((a, b) => a + b, 0);
    const parts = [];
    const n = Math.max((history.loss || []).length, (history.accuracy || []).length);
    if (n) parts.push(n + " epoch" + (n === 1 ? "" : "s"));
    if (fin.length) {
      parts.push((acc === history.val_accuracy ? "validation" : "training") +
        " accuracy " + (100 * fin[fin.length - 1]).toFixed(2) + " %");
    }
    if (secs > 0) parts.push(secs.toFixed(1) + " s of training");
    // the accuracy `fastmlp train` measured on the held-out test set, not on training data
    const testAcc = history.run && history.run.test_accuracy;
    if (typeof testAcc === "number" && isFinite(testAcc)) {
      parts.push("test accuracy " + (100 * testAcc).toFixed(2) + " %");
    }
    curvesNote.textContent = parts.join(" · ");
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }

  getJSON("/api/history").then(drawCurves).catch(() => drawCurves({}));
  getJSON("/api/health").then((h) => {
    // a network given as a layer list (a CNN, or an MLP with BatchNorm or Dropout layers)
    // has its architecture: that list as written in Python, e.g. "[784, 128, BatchNorm(), 10]"
    const listed = h && typeof h.architecture === "string";
    if (listed && h.architecture.includes("Conv2D(")) {
      netKind.textContent = "A convolutional network";
    }
    if (h && (listed || Array.isArray(h.layer_sizes))) {
      modelInfo.textContent = "Model: " + (listed ? h.architecture : h.layer_sizes.join("–")) +
        (typeof h.test_accuracy === "number"
          ? ", " + (100 * h.test_accuracy).toFixed(2) + " % on the test set." : ".");
    }
  }).catch(() => { modelInfo.textContent = "(server not reachable)"; });

  showEmpty("Draw a digit in the box.");
})();
