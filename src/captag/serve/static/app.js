// The captag page: pick or drop a photo, type a caption, POST /predict, draw the answer.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form"), input = $("image"), drop = $("drop"), preview = $("preview");
let maxUploadMb = null;  // the server's limit, from /info

function showPhoto(file) {
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").innerHTML = `<strong>${escapeHtml(file.name)}</strong>: choose another or drop it here`;
}

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function showError(message) {
  $("error").textContent = message;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function render(answer) {
  const chosen = new Set(answer.labels.map((label) => label.name));
  const names = answer.labels.map((label) => label.name).join(", ") || "none";
  $("summary").textContent = `Predicted labels: ${names} (threshold ${answer.threshold.toFixed(3)}, ` +
    `${Math.round(answer.time_ms)} ms).`;
  $("predicted").replaceChildren(...answer.labels.map((label) => {
    const item = document.createElement("li");
    item.textContent = label.name;
    item.dataset.id = label.id;
    return item;
  }));
  const truncated = $("truncated");
  truncated.hidden = !answer.caption_truncated;
  truncated.textContent = answer.caption_truncated
    ? "The caption is longer than the model reads: only its beginning was used." : "";
  $("legend").hidden = false;
  const rows = Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]);
  $("bars").replaceChildren(...rows.map(([name, p]) => bar(name, p, answer.threshold, chosen.has(name))));
}

function bar(name, p, threshold, yes) {
  const row = document.createElement("li");
  row.className = yes ? "bar yes" : "bar";
  row.innerHTML = `<span class="name"></span><span class="track" aria-hidden="true">` +
    `<span class="fill" style="width: ${percent(p)}"></span>` +
    `<span class="mark" style="left: ${percent(threshold)}" title="threshold"></span></span>` +
    `<span class="value"></span>`;
  row.querySelector(".name").textContent = name;
  row.querySelector(".value").textContent = p.toFixed(3);
  row.setAttribute("aria-label", `${name}: ${p.toFixed(3)}${yes ? ", predicted" : ""}`);
  return row;
}

async function predict(event) {
  event.preventDefault();
  showError("");
  const file = input.files[0], caption = $("caption").value.trim();
  if (!file) return showError("Choose a photo first.");
  if (!caption) return showError("Type a caption for the photo.");
  if (maxUploadMb && file.size > maxUploadMb * 2 ** 20) {
    return showError(`The photo is ${(file.size / 2 ** 20).toFixed(1)} MB, over the server's ` +
      `${maxUploadMb} MB upload limit: choose a smaller one.`);
  }
  const body = new FormData();
  body.append("image", file);
  body.append("caption", caption);
  $("submit").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("predict", { method: "POST", body });
    const answer = await response.json().catch(() => ({ detail: `The server answered ${response.status}.` }));
    if (!response.ok) return showError(answer.detail || `The server answered ${response.status}.`);
    render(answer);
  } catch (error) {
    showError(`Could not reach the server (${error.message}).`);
  } finally {
    $("submit").disabled = false;
    $("results").setAttribute("aria-busy", "false");
  }
}

async function loadLimits() {
  try {
    const info = await (await fetch("info")).json();
    maxUploadMb = info.limits.max_upload_mb;
    $("label-count").textContent = `${info.labels.length}`;
    $("image-help").textContent = `Tab here and press Space to pick a file. JPEG, PNG, WebP and ` +
      `other formats, up to ${maxUploadMb} MB. The model: ${info.model.name}, ${info.labels.length} labels.`;
  } catch (error) {
    showError(`Could not reach the server (${error.message}).`);
  }
}

loadLimits();
input.addEventListener("change", () => showPhoto(input.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (!event.dataTransfer.files.length) return;
  input.files = event.dataTransfer.files;
  showPhoto(input.files[0]);
});
form.addEventListener("submit", predict);
