// sae-lens-dit feature dashboards: sort and filter the latent table (it reads fine without this script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table.latents");
  if (!table) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const search = document.getElementById("search");
  const profile = document.getElementById("profile");
  const count = document.getElementById("count");

  function filter() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const row of rows) {
      const text = row.dataset.search.toLowerCase();
      const visible = words.every((w) => text.includes(w)) && (!profile.value || row.dataset.profile === profile.value);
      row.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    count.textContent = `${shown} of ${rows.length} latents`;
  }

  function sort(th, column) {
    const numeric = th.dataset.sort === "number";
    const descending = !th.classList.contains("desc");
    table.tHead.querySelectorAll("th").forEach((h) => h.classList.remove("asc", "desc"));
    th.classList.add(descending ? "desc" : "asc");
    const key = (row) => {
      const value = row.cells[column].dataset.value;
      return numeric ? parseFloat(value) : value;
    };
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    body.append(...rows);
  }

  Array.from(table.tHead.rows[0].cells).forEach((th, column) => {
    if (th.dataset.sort) th.addEventListener("click", () => sort(th, column));
  });
  search.addEventListener("input", filter);
  profile.addEventListener("change", filter);
  filter();
});

// The root index: show one latent id in every SAE of the build (rows list the ids that have a page).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("jump");
  if (!form) return;
  const input = document.getElementById("jump-id");
  const list = document.getElementById("jump-links");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    list.replaceChildren();
    if (!/^\d+$/.test(id)) return;
    for (const row of document.querySelectorAll("table.saes tr[data-folder]")) {
      const item = document.createElement("li");
      const pages = row.dataset.pages.split(" ").filter(Boolean);
      const link = document.createElement("a");
      link.textContent = `${row.dataset.name} #${id}`;
      link.href = `${row.dataset.folder}/` + (pages.includes(id) ? `latents/${id}.html` : "index.html");
      item.append(link);
      if (!pages.includes(id)) item.append(" (no page for this latent; the SAE's index)");
      list.append(item);
    }
  });
});
