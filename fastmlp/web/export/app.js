// fastmlp's exported draw-a-digit page: no libraries, no server code, nothing fetched from
// any other host. It reads model.json (the layers) and model.bin (their weights), turns the
// drawing into a 28x28 image exactly like fastmlp.images.to_mnist, and runs the network's
// forward pass below (dense, conv, max- and average pooling, batch normalisation with the
// running statistics, activations: a few loops; dropout is the identity at inference).
//
// For tests and embedders: after each prediction #prediction carries data-label (the digit),
// data-probabilities (a JSON list, one number per output) and data-input (the 784 values of
// the 28x28 image the network saw, row by row); window.fastmlpExport exposes the model, the
// functions and the last prediction.
"use strict";

(function () {
  const SEND_SIZE = 140;        // the pad's ink is averaged down to this, like the served page
  const LINE_WIDTH = 20;        // in pad pixels (the pad is 280 x 280)
  const SIZE = 28, BOX = 20, CENTRE = 14.0, INK_THRESHOLD = 0.05; // fastmlp/images.py

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d", { willReadFrequently: true });
  const clearButton = document.getElementById("clear");
  const prediction = document.getElementById("prediction");
  const statusLine = document.getElementById("status");
  const probs = document.getElementById("probs");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const modelInfo = document.getElementById("model-info");
  const netKind = document.getElementById("net-kind");

  const api = { model: null, last: null, timings: {}, predictions: 0 };
  window.fastmlpExport = api;

  // ================================================================= preprocessing
  // A line-for-line port of fastmlp.images.to_mnist (numpy there, loops here).

  function roundHalfEven(x) { // Python's round()
    const f = Math.floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  function median(values) { // numpy.median: the mean of the two middle values when even
    const s = Float64Array.from(values).sort();
    const n = s.length, h = n >> 1;
    return n % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
  }

  function border(a, h, w) {
    if (h <= 2 || w <= 2) return a;
    const out = [];
    for (let j = 0; j < w; j++) out.push(a[j]);
    for (let j = 0; j < w; j++) out.push(a[(h - 1) * w + j]);
    for (let i = 1; i < h - 1; i++) out.push(a[i * w]);
    for (let i = 1; i < h - 1; i++) out.push(a[i * w + w - 1]);
    return out;
  }

  // (nOut x nIn) resampling matrix, rows summing to 1: area averaging when shrinking,
  // linear interpolation between pixel centres when enlarging (images._resample_matrix).
  function resampleMatrix(nIn, nOut) {
    const m = new Float64Array(nOut * nIn);
    if (nIn === nOut) {
      for (let i = 0; i < nIn; i++) m[i * nIn + i] = 1;
      return m;
    }
    const scale = nOut / nIn;
    for (let i = 0; i < nOut; i++) {
      let sum = 0;
      for (let j = 0; j < nIn; j++) {
        let v;
        if (scale < 1) {
          const lo = i / scale, hi = (i + 1) / scale;
          v = Math.max(Math.min(hi, j + 1) - Math.max(lo, j), 0);
        } else {
          const pos = Math.min(Math.max((i + 0.5) / scale - 0.5, 0), nIn - 1);
          v = Math.max(1 - Math.abs(pos - j), 0);
        }
        m[i * nIn + j] = v;
        sum += v;
      }
      for (let j = 0; j < nIn; j++) m[i * nIn + j] /= sum;
    }
    return m;
  }

  // rows @ a @ cols.T: a (h x w) -> (nh x nw)
  function resize(a, h, w, nh, nw) {
    const R = resampleMatrix(h, nh), C = resampleMatrix(w, nw);
    const t = new Float64Array(nh * w);
    for (let i = 0; i < nh; i++) {
      for (let k = 0; k < h; k++) {
        const r = R[i * h + k];
        if (r === 0) continue;
        for (let j = 0; j < w; j++) t[i * w + j] += r * a[k * w + j];
      }
    }
    const out = new Float64Array(nh * nw);
    for (let i = 0; i < nh; i++) {
      for (let j = 0; j < nw; j++) {
        let s = 0;
        for (let k = 0; k < w; k++) s += t[i * w + k] * C[j * w + k];
        out[i * nw + j] = s;
      }
    }
    return out;
  }

  // A drawing (h x w values in [0, 1], row by row) -> the 28x28 image the network sees
  // (Float32Array of 784, ink = 1), or null when it shows no ink.
  function toMnist(pixels, h, w) {
    let a = Float64Array.from(pixels, (v) => Math.min(Math.max(v, 0), 1));
    let background = median(border(a, h, w));
    if (background > 0.5) {
      a = a.map((v) => 1 - v);
      background = 1 - background;
    }
    let peak = -Infinity;
    for (const v of a) if (v > peak) peak = v;
    if (peak - background < 1e-3) return null;
    for (let i = 0; i < a.length; i++) {
      a[i] = Math.min(Math.max((a[i] - background) / (peak - background), 0), 1);
    }
    let r0 = h, r1 = -1, c0 = w, c1 = -1;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        if (a[i * w + j] > INK_THRESHOLD) {
          if (i < r0) r0 = i;
          if (i > r1) r1 = i;
          if (j < c0) c0 = j;
          if (j > c1) c1 = j;
        }
      }
    }
    const ch = r1 - r0 + 1, cw = c1 - c0 + 1;
    const crop = new Float64Array(ch * cw);
    for (let i = 0; i < ch; i++) {
      for (let j = 0; j < cw; j++) crop[i * cw + j] = a[(r0 + i) * w + c0 + j];
    }
    const scale = BOX / Math.max(ch, cw);
    const nh = Math.min(BOX, Math.max(1, roundHalfEven(ch * scale)));
    const nw = Math.min(BOX, Math.max(1, roundHalfEven(cw * scale)));
    const digit = resize(crop, ch, cw, nh, nw);
    let top = 0;
    for (const v of digit) if (v > top) top = v;
    if (!(top > 0)) return null;
    let mass = 0, my = 0, mx = 0;
    for (let i = 0; i < nh; i++) {
      for (let j = 0; j < nw; j++) {
        const v = (digit[i * nw + j] /= top);
        mass += v;
        my += v * i;
        mx += v * j;
      }
    }
    const cy = my / mass, cx = mx / mass;
    const row0 = Math.min(Math.max(Math.floor(CENTRE - cy + 0.5), 0), SIZE - nh);
    const col0 = Math.min(Math.max(Math.floor(CENTRE - cx + 0.5), 0), SIZE - nw);
    const out = new Float32Array(SIZE * SIZE);
    for (let i = 0; i < nh; i++) {
      for (let j = 0; j < nw; j++) out[(row0 + i) * SIZE + col0 + j] = digit[i * nw + j];
    }
    return out;
  }

  // ================================================================= the network
  const ACTIVATIONS = {
    relu: (z) => { for (let i = 0; i < z.length; i++) if (z[i] < 0) z[i] = 0; },
    sigmoid: (z) => {
      for (let i = 0; i < z.length; i++) {
        const e = Math.exp(-Math.abs(z[i]));
        z[i] = z[i] >= 0 ? 1 / (1 + e) : e / (1 + e);
      }
    },
    tanh: (z) => { for (let i = 0; i < z.length; i++) z[i] = Math.tanh(z[i]); },
    identity: () => {},
    exp: (z) => { for (let i = 0; i < z.length; i++) z[i] = Math.exp(z[i]); },
    softmax: (z) => {
      let m = -Infinity, s = 0;
      for (const v of z) if (v > m) m = v;
      for (let i = 0; i < z.length; i++) { z[i] = Math.exp(z[i] - m); s += z[i]; }
      for (let i = 0; i < z.length; i++) z[i] /= s;
    },
  };

  // z = W a + b, W (nOut, nIn) row by row
  function dense(layer, x) {
    const W = layer.W, b = layer.b, nIn = x.length, nOut = b.length;
    const z = new Float64Array(nOut);
    for (let o = 0; o < nOut; o++) {
      let s = b[o];
      const row = o * nIn;
      for (let i = 0; i < nIn; i++) s += W[row + i] * x[i];
      z[o] = s;
    }
    return z;
  }

  // cross-correlation with zero padding and a stride; W (F, C, kh, kw), x and z (C, H, W)
  function conv(layer, x) {
    const [C, H, Wd] = layer.in_shape, [F, OH, OW] = layer.out_shape;
    const [kh, kw] = layer.kernel_size, s = layer.stride, p = layer.padding;
    const W = layer.W, b = layer.b;
    const z = new Float64Array(F * OH * OW);
    for (let f = 0; f < F; f++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          let sum = b[f];
          for (let c = 0; c < C; c++) {
            for (let u = 0; u < kh; u++) {
              const iy = oy * s + u - p;
              if (iy < 0 || iy >= H) continue;
              const wrow = ((f * C + c) * kh + u) * kw, xrow = (c * H + iy) * Wd;
              for (let v = 0; v < kw; v++) {
                const ix = ox * s + v - p;
                if (ix >= 0 && ix < Wd) sum += W[wrow + v] * x[xrow + ix];
              }
            }
          }
          z[(f * OH + oy) * OW + ox] = sum;
        }
      }
    }
    return z;
  }

  // the maximum (max-pooling) or the mean (average pooling) of each size x size window,
  // stride apart (no padding, output sizes floored)
  function pool(layer, x, mean) {
    const [C, H, Wd] = layer.in_shape, [, OH, OW] = layer.out_shape;
    const k = layer.size, s = layer.stride;
    const z = new Float64Array(C * OH * OW);
    for (let c = 0; c < C; c++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          let m = mean ? 0 : -Infinity;
          for (let u = 0; u < k; u++) {
            const row = (c * H + oy * s + u) * Wd + ox * s;
            for (let v = 0; v < k; v++) {
              if (mean) m += x[row + v];
              else if (x[row + v] > m) m = x[row + v];
            }
          }
          z[(c * OH + oy) * OW + ox] = mean ? m / (k * k) : m;
        }
      }
    }
    return z;
  }

  // batch normalisation at inference, in place: per channel c (all its H*W positions),
  // z = gamma (z - running_mean) / sqrt(running_var + eps) + beta = z * scale + shift
  function batchnorm(layer, z) {
    const [C, H, Wd] = layer.out_shape, hw = H * Wd;
    for (let c = 0; c < C; c++) {
      const scale = layer.scale[c], shift = layer.shift[c];
      for (let i = c * hw; i < (c + 1) * hw; i++) z[i] = z[i] * scale + shift;
    }
  }

  const LAYERS = { // type -> the layer's output (before its activation); the input is flat
    dense: dense,
    conv: conv,
    pool: (layer, x) => pool(layer, x, false),
    avgpool: (layer, x) => pool(layer, x, true),
    batchnorm: (layer, x) => { batchnorm(layer, x); return x; },
    dropout: (layer, x) => x, // the identity at inference
  };

  // The network's output for one input (C*H*W values, (C, H, W) order): predict_proba.
  function forward(input) {
    let a = Float64Array.from(input);
    for (const layer of api.model.layers) {
      a = LAYERS[layer.type](layer, a); // flatten: a is always flat
      // a layer that a BatchNorm follows has none: the BatchNorm applies it
      if (layer.activation) ACTIVATIONS[layer.activation](a);
    }
    return a;
  }

  function littleEndianHost() { return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1; }

  async function loadModel() {
    const started = performance.now();
    const reply = await fetch("model.json", { cache: "no-cache" });
    if (!reply.ok) throw new Error("model.json: HTTP " + reply.status);
    const m = await reply.json();
    if (m.format !== "fastmlp.web-model" || !(m.version === 1 || m.version === 2)) {
      throw new Error("model.json is not a fastmlp web model (version 1 or 2)");
    }
    const wr = await fetch(m.weights_file, { cache: "no-cache" });
    if (!wr.ok) throw new Error(m.weights_file + ": HTTP " + wr.status);
    const buf = await wr.arrayBuffer();
    if (buf.byteLength !== m.weights_bytes) {
      throw new Error(m.weights_file + " has " + buf.byteLength + " bytes, model.json says " +
                      m.weights_bytes);
    }
    const Arr = m.dtype === "float64" ? Float64Array : Float32Array;
    let all;
    if (littleEndianHost()) {
      all = new Arr(buf);
    } else { // model.bin is little-endian
      const view = new DataView(buf), n = buf.byteLength / Arr.BYTES_PER_ELEMENT;
      all = new Arr(n);
      for (let i = 0; i < n; i++) {
        all[i] = Arr === Float64Array ? view.getFloat64(8 * i, true) : view.getFloat32(4 * i, true);
      }
    }
    const block = (ref) => all.subarray(ref.offset, ref.offset + ref.length);
    for (const layer of m.layers) {
      if (!LAYERS[layer.type]) throw new Error("unknown layer type " + layer.type);
      if (layer.activation && !ACTIVATIONS[layer.activation]) {
        throw new Error("unknown activation " + layer.activation);
      }
      if (layer.type === "dense" || layer.type === "conv") {
        layer.W = block(layer.weights);
        layer.b = block(layer.bias);
      } else if (layer.type === "batchnorm") { // its scale and shift, in float64
        const gamma = block(layer.gamma), beta = block(layer.beta);
        const mean = block(layer.running_mean), variance = block(layer.running_var);
        layer.scale = new Float64Array(gamma.length);
        layer.shift = new Float64Array(gamma.length);
        for (let c = 0; c < gamma.length; c++) {
          layer.scale[c] = gamma[c] / Math.sqrt(variance[c] + layer.eps);
          layer.shift[c] = beta[c] - mean[c] * layer.scale[c];
        }
      }
    }
    api.timings.modelLoadMs = performance.now() - started;
    api.timings.modelReadyMs = performance.now(); // since the navigation started
    return m;
  }

  // ================================================================= the page
  const rows = [];
  function makeBars(n) {
    for (let d = 0; d < n; d++) {
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
      row.append(label, bar, pct);
      probs.appendChild(row);
      rows.push({ row, fill, pct });
    }
  }

  let drawing = false, activePointer = null, last = null, hasInk = false, frame = null;

  ctx.lineWidth = LINE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";

  function toPad(e) {
    const r = pad.getBoundingClientRect();
    const bx = (r.width - pad.clientWidth) / 2, by = (r.height - pad.clientHeight) / 2;
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
    ctx.clearRect(0, 0, pad.width, pad.height);
    if (api.model) showEmpty("Draw a digit in the box.");
  }
  clearButton.addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") clearAll(); });

  // The pad's ink (alpha) averaged down to SEND_SIZE x SEND_SIZE, rounded to 1/1000: the
  // same values the served page sends to /api/predict. Null when there is no ink.
  function padPixels() {
    const w = pad.width, h = pad.height;
    const alpha = ctx.getImageData(0, 0, w, h).data;
    const out = new Float64Array(SEND_SIZE * SEND_SIZE);
    let any = false;
    for (let i = 0; i < SEND_SIZE; i++) {
      const y0 = Math.floor((i * h) / SEND_SIZE), y1 = Math.floor(((i + 1) * h) / SEND_SIZE);
      for (let j = 0; j < SEND_SIZE; j++) {
        const x0 = Math.floor((j * w) / SEND_SIZE), x1 = Math.floor(((j + 1) * w) / SEND_SIZE);
        let sum = 0, n = 0;
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) { sum += alpha[(y * w + x) * 4 + 3]; n++; }
        }
        const v = n ? Math.round((sum / n / 255) * 1000) / 1000 : 0;
        if (v > 0) any = true;
        out[i * SEND_SIZE + j] = v;
      }
    }
    return any ? out : null;
  }

  function cancelScheduled() {
    if (frame !== null) { cancelAnimationFrame(frame); frame = null; }
  }

  function schedulePredict() { // at most once per animation frame while drawing
    if (frame === null) frame = requestAnimationFrame(() => { frame = null; predictNow(); });
  }

  function predictNow() {
    cancelScheduled();
    if (!api.model) return; // predicted once the model has loaded
    const started = performance.now();
    const pixels = hasInk ? padPixels() : null;
    const input = pixels && toMnist(pixels, SEND_SIZE, SEND_SIZE);
    if (!input) { showEmpty("Draw a digit in the box."); return; }
    const p = forward(input);
    let label = 0;
    for (let d = 1; d < p.length; d++) if (p[d] > p[label]) label = d;
    const ms = performance.now() - started;
    api.predictions++;
    if (api.timings.firstPredictionMs === undefined) api.timings.firstPredictionMs = ms;
    api.timings.lastPredictionMs = ms;
    api.last = { pixels, size: SEND_SIZE, input, probabilities: Array.from(p), label, ms };
    showResult(label, p, input, ms);
  }

  function showEmpty(message) {
    prediction.textContent = "–";
    prediction.dataset.status = "empty";
    delete prediction.dataset.label;
    delete prediction.dataset.probabilities;
    delete prediction.dataset.input;
    statusLine.textContent = message;
    statusLine.classList.remove("error");
    for (const r of rows) {
      r.fill.style.width = "0%";
      r.pct.textContent = "";
      r.row.classList.remove("top");
    }
    seenCtx.clearRect(0, 0, seen.width, seen.height);
  }

  function showError(message) {
    prediction.textContent = "?";
    prediction.dataset.status = "error";
    statusLine.textContent = message;
    statusLine.classList.add("error");
  }

  function showResult(label, p, input, ms) {
    prediction.textContent = String(label);
    prediction.dataset.label = String(label);
    prediction.dataset.probabilities = JSON.stringify(Array.from(p));
    prediction.dataset.input = JSON.stringify(Array.from(input));
    prediction.dataset.status = "ready";
    statusLine.textContent = "confidence " + (100 * p[label]).toFixed(1) + " % · " +
      ms.toFixed(1) + " ms in your browser";
    statusLine.classList.remove("error");
    rows.forEach((r, d) => {
      const v = d < p.length ? p[d] : 0;
      r.fill.style.width = (100 * v).toFixed(1) + "%";
      r.pct.textContent = (100 * v).toFixed(1) + "%";
      r.row.classList.toggle("top", d === label);
    });
    const img = seenCtx.createImageData(SIZE, SIZE);
    for (let i = 0; i < SIZE * SIZE; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, input[i])));
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    seenCtx.putImageData(img, 0, 0);
  }

  Object.assign(api, { toMnist, forward, padPixels, predictNow, clear: clearAll });

  api.ready = loadModel().then((m) => {
    api.model = m;
    makeBars(m.n_outputs);
    const cnn = m.layers.some((l) => l.type === "conv");
    netKind.textContent = cnn ? "A convolutional network" : "An MLP";
    modelInfo.textContent = "Model: " + m.architecture + ", " +
      m.n_params.toLocaleString("en") + " parameters (" + (m.weights_bytes < 1e6
        ? (m.weights_bytes / 1e3).toFixed(1) + " kB)." : (m.weights_bytes / 1e6).toFixed(1) + " MB).");
    showEmpty("Draw a digit in the box.");
    if (hasInk) predictNow(); // drawn while the model was loading
  }).catch((err) => {
    const hint = location.protocol === "file:"
      ? " Browsers do not let a page opened from a file read its model: serve this folder, " +
        "e.g. python3 -m http.server -d THIS_FOLDER, and open http://127.0.0.1:8000/."
      : "";
    modelInfo.textContent = "";
    showError("Could not load the model: " + err.message + "." + hint);
  });
})();
