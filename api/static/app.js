// simsearch page: upload / drop / random image -> /api/search or /api/images/<id>/similar -> render.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), fileInput = $("file"), queryImage = $("query-image");
  let objectUrl = null;

  function options() {
    const label = $("label-filter").value;
    return "k=" + encodeURIComponent($("k").value) + "&weighted=" + ($("weighted").checked ? "true" : "false") +
      (label ? "&label=" + encodeURIComponent(label) : "");
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(text) { $("status").textContent = text || ""; }

  function showQuery(src, small) {
    queryImage.src = src;
    queryImage.hidden = false;
    queryImage.classList.toggle("small", !!small);
    $("drop-hint").hidden = true;
  }

  async function callApi(url, init) {
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new Error("The server could not be reached (" + err.message + ").");
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) {
      throw new Error((body && body.error) ? body.error : "Request failed with status " + response.status + ".");
    }
    return body;
  }

  let rerun = null;  // repeats the last query when a search option changes

  async function searchFile(file) {
    if (!file) return;
    rerun = () => searchFile(file);
    showError("");
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    showQuery(objectUrl, false);
    queryImage.onload = () => queryImage.classList.toggle("small", queryImage.naturalWidth < 100);
    setStatus("Searching…");
    const form = new FormData();
    form.append("image", file, file.name || "upload");
    try {
      render(await callApi("api/search?" + options(), { method: "POST", body: form }));
      setStatus("Query: " + (file.name || "uploaded image"));
    } catch (err) { fail(err); }
  }

  async function searchRandom() {
    showError("");
    setStatus("Picking a random indexed image…");
    try {
      const pick = await callApi("api/images/random?n=1");
      if (!pick.items.length) throw new Error("The index is empty.");
      await searchItem(pick.items[0]);
    } catch (err) { fail(err); }
  }

  async function searchItem(item) {
    rerun = () => searchItem(item).catch(fail);
    showQuery("api/images/" + item.id + "?size=256", true);
    const result = await callApi("api/images/" + item.id + "/similar?" + options());
    render(result);
    setStatus("Query: indexed image #" + item.id + (item.label === null ? "" : " (labelled " + item.label + ")") +
      ", itself excluded");
  }

  function fail(err) {
    setStatus("");
    showError(err.message);
    $("prediction").hidden = true;
    $("results").hidden = true;
  }

  function render(result) {
    const p = result.prediction;  // null: no neighbour has a label (an unlabelled index), so no class bar
    const t = result.timings_ms || {};
    $("timings").textContent = Object.keys(t).map((key) => key + " " + Number(t[key]).toFixed(1) + " ms").join(" · ");
    $("prediction").hidden = p === null;
    if (p !== null) renderPrediction(p, result.neighbors.length);
    renderNeighbors(result.neighbors, p === null ? null : p.label);
    $("results").hidden = false;
  }

  function renderPrediction(p, neighbours) {
    $("pred-label").textContent = p.label === null ? "—" : p.label;
    $("pred-unknown").hidden = !p.is_unknown;
    $("pred-bar").style.width = Math.round(p.confidence * 100) + "%";
    $("pred-confidence").textContent = Math.round(p.confidence * 100) + "% of the " +
      (p.weighted ? "weighted " : "") + "votes of " + neighbours + " neighbours";
    const votes = $("votes");
    votes.replaceChildren();
    const entries = Object.entries(p.votes).sort((a, b) => b[1] - a[1]);
    const total = entries.reduce((s, e) => s + e[1], 0) || 1;
    for (const [label, count] of entries) {
      const li = document.createElement("li");
      if (label === p.label) li.className = "win";
      const name = document.createElement("span"); name.textContent = label;
      const bar = document.createElement("div"); bar.className = "vbar";
      const fill = document.createElement("div"); fill.style.width = (100 * count / total) + "%";
      bar.appendChild(fill);
      const num = document.createElement("span"); num.className = "num";
      num.textContent = p.weighted ? count.toFixed(2) : String(count);
      li.append(name, bar, num);
      votes.appendChild(li);
    }
  }

  function renderNeighbors(neighbors, winner) {
    const grid = $("grid");
    grid.replaceChildren();
    for (const n of neighbors) {
      const card = document.createElement("a");
      card.className = "card neighbor";
      card.href = n.image_url.replace(/^\//, "");
      card.target = "_blank";
      card.rel = "noopener";
      const img = document.createElement("img");
      img.loading = "lazy";
      img.src = n.thumbnail_url.replace(/^\//, "");
      img.alt = n.label === null ? "image " + n.id : n.label;
      const meta = document.createElement("div"); meta.className = "meta";
      const lab = document.createElement("div");
      lab.className = "lab" + (winner !== null && n.label === winner ? " match" : "");
      lab.textContent = n.rank + ". " + (n.label === null ? "#" + n.id : n.label);
      const sc = document.createElement("div"); sc.className = "sc";
      sc.textContent = "score " + n.score.toFixed(3) + " · cos " + n.similarity.toFixed(3);
      meta.append(lab, sc);
      card.append(img, meta);
      grid.appendChild(card);
    }
  }

  drop.addEventListener("click", () => fileInput.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") fileInput.click(); });
  fileInput.addEventListener("change", () => searchFile(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  $("random").addEventListener("click", searchRandom);
  ["k", "weighted", "label-filter"].forEach((id) => $(id).addEventListener("change", () => { if (rerun) rerun(); }));

  callApi("api/stats").then((s) => {
    const classes = Object.keys(s.label_counts).length;
    $("index-info").textContent = s.items + " indexed images · " + (classes ? classes + " classes" : "no labels") +
      " · " + (s.index.index_type || "empty") + " index" + (s.index.backend === "milvus" ? " on Milvus" : "");
    // an index without labels has no class to filter on or vote for
    $("class-options").hidden = !classes && s.items > 0;
    const filter = $("label-filter");
    for (const name of Object.keys(s.label_counts)) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name + " (" + s.label_counts[name] + ")";
      filter.appendChild(option);
    }
  }).catch(() => {});
})();
