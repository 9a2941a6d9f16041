// Infery Gateway admin dashboard: a plain client of /admin/v1, no build step, no dependencies.
// Everything from the API is rendered as text nodes (never as HTML). Credits are decimal
// strings and are shown as they come: the sums are the API's, never computed here.
"use strict";
(() => {
  const TOKEN_KEY = "infery.adminToken";
  const $ = (selector, root = document) => root.querySelector(selector);
  const state = { workspace: null, editingWorkspace: null, usage: null, files: null };

  // --- API ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // `template` is an /admin/v1 route as the server declares it, e.g. /admin/v1/models/{slug};
  // `params` fill its placeholders, URL-encoded.
  async function api(method, template, { params = {}, query = {}, body } = {}) {
    let url = template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name]));
    const search = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null));
    if (search.toString()) url += "?" + search;
    const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status,
        error.message || response.statusText || "request failed");
    }
    return data;
  }

  // --- rendering helpers ----------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  const button = (label, handler, cls = "") =>
    el("button", { type: "button", class: cls, onclick: () => run(handler) }, label);
  const danger = (label, question, handler) =>
    button(label, async () => { if (confirm(question)) await handler(); }, "danger");
  const cell = (value) => (value === null || value === undefined || value === "" ? "—" : value);
  const num = (value) => el("span", { class: "num" }, Number(value).toLocaleString("en-US"));

  function fill(tbody, rows, empty = "Nothing here yet.") {
    const columns = tbody.closest("table").querySelectorAll("thead th").length;
    tbody.replaceChildren(...(rows.length
      ? rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, cell(c)))))
      : [el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty))]));
  }

  function options(select, items, keep = true) {
    const previous = select.value;
    select.replaceChildren(...items.map(([value, label]) => el("option", { value }, label)));
    if (keep && items.some(([value]) => value === previous)) select.value = previous;
  }

  function banner(id, text) {
    const node = $(id);
    node.textContent = text || "";
    node.hidden = !text;
  }

  // Runs one user action: clears old messages, shows an API error as "message (code)".
  async function run(action) {
    banner("#error");
    banner("#notice");
    try {
      await action();
    } catch (error) {
      if (error instanceof ApiError) {
        banner("#error", `${error.message} (${error.code})`);
        if (error.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          show();
        }
      } else {
        banner("#error", "The control plane could not be reached: " + error.message);
      }
    }
  }

  function onSubmit(selector, handler) {
    const form = $(selector);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(() => handler(new FormData(form), form));
    });
  }

  const text = (form, name) => String(form.get(name) ?? "").trim();
  const optional = (form, name) => text(form, name) || null;
  const integer = (form, name) => (text(form, name) === "" ? null : Number(text(form, name)));
  const list = (form, name) => text(form, name).split(",").map((s) => s.trim()).filter(Boolean);

  // --- providers ------------------------------------------------------------------------

  async function loadProviders() {
    const { data } = await api("GET", "/admin/v1/providers");
    fill($("#providers tbody"), data.map((p) => [p.name, p.kind, p.base_url, p.has_api_key ? "set" : "none",
      el("span", { class: "actions" },
        button("Import catalog", async () => {
          const imported = await api("POST", "/admin/v1/providers/{name}/import-catalog",
            { params: { name: p.name } });
          banner("#notice", `${imported.data.length} catalog model(s) added for ${p.name}.`);
        }),
        danger("Delete", `Delete provider ${p.name}?`, async () => {
          await api("DELETE", "/admin/v1/providers/{name}", { params: { name: p.name } });
          await loadProviders();
        }))]));
  }

  onSubmit("#provider-form", async (form, node) => {
    await api("POST", "/admin/v1/providers", { body: {
      name: text(form, "name"), kind: text(form, "kind"), base_url: text(form, "base_url"),
      api_key: optional(form, "api_key"),
    } });
    node.reset();
    await loadProviders();
  });

  // --- models ---------------------------------------------------------------------------

  const PRICES = ["input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "per_image",
    "per_audio_second", "per_mchar"];

  async function loadModels() {
    const [models, providers] = await Promise.all([
      api("GET", "/admin/v1/models"), api("GET", "/admin/v1/providers")]);
    options($("#model-form [name=provider]"), providers.data.map((p) => [p.name, p.name]));
    fill($("#models tbody"), models.data.map((m) => [m.slug, m.provider, m.upstream_model,
      ...PRICES.map((name) => m.prices[name]), m.capabilities.join(", "),
      danger("Delete", `Delete model ${m.slug}?`, async () => {
        await api("DELETE", "/admin/v1/models/{slug}", { params: { slug: m.slug } });
        await loadModels();
      })]));
  }

  onSubmit("#model-form", async (form, node) => {
    const body = { slug: text(form, "slug"), provider: text(form, "provider") };
    if (text(form, "upstream_model")) body.upstream_model = text(form, "upstream_model");
    if (PRICES.some((name) => text(form, name))) {
      body.prices = Object.fromEntries(PRICES.map((name) => [name, optional(form, name)]));
    }
    await api("POST", "/admin/v1/models", { body });
    node.reset();
    await loadModels();
  });

  // --- routes ---------------------------------------------------------------------------

  async function loadRoutes() {
    const [routes, models] = await Promise.all([
      api("GET", "/admin/v1/routes"), api("GET", "/admin/v1/models")]);
    $("#model-slugs").replaceChildren(...models.data.map((m) => el("option", { value: m.slug })));
    fill($("#routes tbody"), routes.data.map((r) => [r.slug, r.fallbacks.join(" → "), r.retry_on.join(", "),
      r.attempt_timeout_s, r.total_timeout_s,
      el("span", { class: "actions" },
        button("Edit", () => editRoute(r)),
        danger("Delete", `Delete the fallback route of ${r.slug}?`, async () => {
          await api("DELETE", "/admin/v1/routes/{slug}", { params: { slug: r.slug } });
          await loadRoutes();
        }))]), "No fallback routes: every model is served by its own provider only.");
  }

  function editRoute(route) {
    const form = $("#route-form");
    const field = (name) => form.elements.namedItem(name);
    field("slug").value = route.slug;
    field("fallbacks").value = route.fallbacks.join(", ");
    for (const box of form.querySelectorAll("[name=retry_on]")) box.checked = route.retry_on.includes(box.value);
    field("attempt_timeout_s").value = route.attempt_timeout_s;
    field("total_timeout_s").value = route.total_timeout_s;
    $("#route-title").textContent = "Edit the route of " + route.slug;
    form.scrollIntoView({ behavior: "smooth" });
  }

  onSubmit("#route-form", async (form, node) => {
    const slug = text(form, "slug");
    await api("PUT", "/admin/v1/routes/{slug}", { params: { slug }, body: {
      fallbacks: list(form, "fallbacks"),
      retry_on: form.getAll("retry_on"),
      attempt_timeout_s: Number(text(form, "attempt_timeout_s")),
      total_timeout_s: Number(text(form, "total_timeout_s")),
    } });
    node.reset();
    $("#route-title").textContent = "Set a route";
    banner("#notice", `Route of ${slug} saved.`);
    await loadRoutes();
  });

  // --- workspaces, members, keys ----------------------------------------------------------

  async function loadWorkspaces() {
    const { data } = await api("GET", "/admin/v1/workspaces");
    fill($("#workspaces > table tbody"), data.map((w) => [w.name, w.rpm, w.tpm, w.budget_credits,
      w.budget_period, w.price_multiplier, w.allowed_models.join(", ") || "all",
      el("span", { class: "actions" },
        button("Members & keys", () => openWorkspace(w.name)),
        button("Edit", () => editWorkspace(w)),
        danger("Delete", `Delete workspace ${w.name} with its members and keys?`, async () => {
          await api("DELETE", "/admin/v1/workspaces/{name}", { params: { name: w.name } });
          if (state.workspace === w.name) closeWorkspace();
          await loadWorkspaces();
        }))]));
    if (state.workspace) await loadWorkspace();
  }

  function editWorkspace(w) {
    const form = $("#workspace-form");
    state.editingWorkspace = w.name;
    for (const name of ["name", "rpm", "tpm", "budget_credits", "budget_period", "price_multiplier"]) {
      form.elements.namedItem(name).value = w[name] ?? "";
    }
    form.elements.namedItem("allowed_models").value = w.allowed_models.join(", ");
    $("#workspace-title").textContent = "Edit workspace " + w.name;
    $("#workspace-new").hidden = false;
    form.scrollIntoView({ behavior: "smooth" });
  }

  function resetWorkspaceForm() {
    $("#workspace-form").reset();
    state.editingWorkspace = null;
    $("#workspace-title").textContent = "Add a workspace";
    $("#workspace-new").hidden = true;
  }

  $("#workspace-new").addEventListener("click", resetWorkspaceForm);

  onSubmit("#workspace-form", async (form) => {
    const body = {
      name: text(form, "name"), rpm: integer(form, "rpm"), tpm: integer(form, "tpm"),
      budget_credits: optional(form, "budget_credits"), budget_period: text(form, "budget_period"),
      price_multiplier: text(form, "price_multiplier"), allowed_models: list(form, "allowed_models"),
    };
    if (state.editingWorkspace) {
      await api("PUT", "/admin/v1/workspaces/{name}", { params: { name: state.editingWorkspace }, body });
      if (state.workspace === state.editingWorkspace) state.workspace = body.name;
    } else {
      await api("POST", "/admin/v1/workspaces", { body });
    }
    resetWorkspaceForm();
    await loadWorkspaces();
  });

  async function openWorkspace(name) {
    state.workspace = name;
    $("#secret").hidden = true;
    await loadWorkspace();
    $("#workspace-detail").scrollIntoView({ behavior: "smooth" });
  }

  function closeWorkspace() {
    state.workspace = null;
    $("#workspace-detail").hidden = true;
  }

  async function loadWorkspace() {
    const name = state.workspace;
    const params = { name };
    const [members, keys, files] = await Promise.all([
      api("GET", "/admin/v1/workspaces/{name}/members", { params }),
      api("GET", "/admin/v1/workspaces/{name}/keys", { params }),
      api("GET", "/admin/v1/workspaces/{name}/files", { params })]);
    $("#detail-title").textContent = "Workspace " + name;
    $("#workspace-detail").hidden = false;
    fill($("#members tbody"), members.data.map((m) => [m.email, m.role, m.id,
      danger("Remove", `Remove ${m.email} and delete their keys?`, async () => {
        await api("DELETE", "/admin/v1/workspaces/{name}/members/{member}", { params: { name, member: m.id } });
        await loadWorkspace();
      })]));
    options($("#key-form [name=member]"), members.data.map((m) => [m.id, m.email]));
    const when = (iso) => iso.slice(0, 16).replace("T", " ") + " UTC";
    fill($("#keys tbody"), keys.data.map((k) => [k.name, k.prefix + "…", k.member_email, when(k.created_at),
      k.revoked_at ? "revoked " + when(k.revoked_at) : "active",
      k.revoked_at ? el("span") : danger("Revoke", `Revoke key ${k.name}? Requests using it fail within a second.`,
        async () => {
          await api("DELETE", "/admin/v1/workspaces/{name}/keys/{key_id}", { params: { name, key_id: k.id } });
          await loadWorkspace();
        })]));
    state.files = { name, emails: new Map(members.data.map((m) => [m.id, m.email])), shown: [] };
    showFiles(files);
  }

  // The workspace's stored files, a page at a time ("More files" asks for the next one).
  function showFiles(page) {
    const files = state.files;
    files.shown.push(...page.data);
    files.last = page.data.length ? page.data[page.data.length - 1].id : files.last;
    const when = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "kept until deleted");
    fill($("#files tbody"), files.shown.map((f) => [f.filename, f.id, f.purpose, num(f.bytes),
      files.emails.get(f.member) || f.member, when(f.created_at), when(f.expires_at)]), "No files.");
    $("#files-more").hidden = !page.has_more;
  }

  $("#files-more").addEventListener("click", () => run(async () => {
    const { name, last } = state.files;
    showFiles(await api("GET", "/admin/v1/workspaces/{name}/files", { params: { name }, query: { after: last } }));
  }));

  onSubmit("#member-form", async (form, node) => {
    await api("POST", "/admin/v1/workspaces/{name}/members", { params: { name: state.workspace },
      body: { email: text(form, "email"), role: text(form, "role") } });
    node.reset();
    await loadWorkspace();
  });

  onSubmit("#key-form", async (form, node) => {
    const created = await api("POST", "/admin/v1/workspaces/{name}/keys", { params: { name: state.workspace },
      body: { name: text(form, "name"), member: text(form, "member") } });
    node.reset();
    await loadWorkspace();
    const secret = $("#secret input");
    secret.value = created.key;
    $("#secret").hidden = false;
    secret.select();
  });

  // --- usage ------------------------------------------------------------------------------

  async function loadUsage() {
    const { data } = await api("GET", "/admin/v1/workspaces");
    options($("#usage-form [name=workspace]"), [["", "all"], ...data.map((w) => [w.name, w.name])]);
    await showUsage();
  }

  // Key and member groups are ids; within one workspace they can be named.
  async function groupLabels(groupBy, workspace) {
    if (!workspace || (groupBy !== "key" && groupBy !== "member")) return new Map();
    const params = { name: workspace };
    if (groupBy === "key") {
      const keys = await api("GET", "/admin/v1/workspaces/{name}/keys", { params });
      return new Map(keys.data.map((k) => [k.id, `${k.name} (${k.prefix}…)`]));
    }
    const members = await api("GET", "/admin/v1/workspaces/{name}/members", { params });
    return new Map(members.data.map((m) => [m.id, m.email]));
  }

  async function showUsage() {
    const form = new FormData($("#usage-form"));
    const query = { workspace: text(form, "workspace"), from: text(form, "from"), to: text(form, "to") };
    const groupBy = text(form, "group_by");
    const [grouped, total, labels] = await Promise.all([
      api("GET", "/admin/v1/usage", { query: { ...query, group_by: groupBy } }),
      api("GET", "/admin/v1/usage", { query }),
      groupLabels(groupBy, query.workspace)]);
    const table = $("#usage table");
    table.querySelector("thead th").textContent = groupBy;
    const figures = (r) => [num(r.requests), num(r.input_tokens), num(r.cached_input_tokens),
      num(r.output_tokens), num(r.file_bytes), el("span", { class: "num" }, r.credits)];
    const rows = grouped.rows.map((r) => ({ ...r, label: labels.get(r.group) || r.group }));
    fill(table.querySelector("tbody"), rows.map((r) => [r.label, ...figures(r)]), "No usage in this range.");
    state.usage = { groupBy, rows };
    drawChart(rows);
    const sum = total.rows[0] || { requests: 0, input_tokens: 0, cached_input_tokens: 0, output_tokens: 0,
      file_bytes: 0, credits: "0" };
    table.querySelector("tfoot").replaceChildren(
      el("tr", {}, ...["Total", ...figures(sum)].map((c) => el("th", {}, c))));
  }

  // A horizontal bar per group, its length the group's share of the largest credits figure; the
  // figure itself is printed as the API sent it. SVG built node by node (text nodes only).
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS($("#usage-chart").namespaceURI, tag);  // the SVG namespace
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(rows) {
    const chart = $("#usage-chart");
    const bar = 22, labelWidth = 220, barWidth = 420, height = Math.max(rows.length, 1) * bar + 4;
    chart.setAttribute("viewBox", `0 0 ${labelWidth + barWidth + 120} ${height}`);
    chart.setAttribute("height", String(height));
    const largest = Math.max(0, ...rows.map((r) => Number(r.credits)));
    chart.replaceChildren(...rows.flatMap((r, i) => {
      const y = i * bar + 2;
      const width = largest > 0 ? Math.max(1, (Number(r.credits) / largest) * barWidth) : 1;
      return [
        svg("text", { x: labelWidth - 6, y: y + 15, "text-anchor": "end", class: "chart-label" }, String(r.label)),
        svg("rect", { x: labelWidth, y, width, height: bar - 6, class: "chart-bar",
          "data-group": String(r.group) }, undefined),
        svg("text", { x: labelWidth + width + 6, y: y + 15, class: "chart-value" }, r.credits),
      ];
    }));
  }

  // The table as shown (group label, id, figures), as RFC 4180 CSV.
  function usageCsv() {
    const quote = (value) => {
      const text = String(value ?? "");
      return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
    };
    const { groupBy, rows } = state.usage;
    const header = [groupBy, groupBy + "_id", "requests", "input_tokens", "cached_input_tokens",
      "output_tokens", "file_bytes", "credits"];
    const lines = rows.map((r) => [r.label, r.group, r.requests, r.input_tokens, r.cached_input_tokens,
      r.output_tokens, r.file_bytes, r.credits]);
    return [header, ...lines].map((line) => line.map(quote).join(",")).join("\r\n") + "\r\n";
  }

  $("#usage-csv").addEventListener("click", () => run(async () => {
    if (!state.usage) await showUsage();
    const link = el("a", { href: URL.createObjectURL(new Blob([usageCsv()], { type: "text/csv" })),
      download: `usage-by-${state.usage.groupBy}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  }));

  $("#usage-form").addEventListener("change", () => run(showUsage));
  onSubmit("#usage-form", showUsage);

  // --- batches ----------------------------------------------------------------------------

  async function loadBatches() {
    const { data } = await api("GET", "/admin/v1/workspaces");
    options($("#batches-form [name=workspace]"), [["", "all"], ...data.map((w) => [w.name, w.name])]);
    await showBatches();
  }

  async function showBatches() {
    const workspace = new FormData($("#batches-form")).get("workspace");
    const { data } = await api("GET", "/admin/v1/batches", { query: workspace ? { workspace } : {} });
    fill($("#batches tbody"), data.map((b) => {
      const counts = b.request_counts;
      const done = counts.completed + counts.failed;
      const bar = el("progress", { max: String(Math.max(counts.total, 1)), value: String(done) });
      const created = new Date(b.created_at * 1000).toISOString().replace("T", " ").slice(0, 19);
      return [b.id, b.workspace, b.endpoint, b.status, el("span", {}, bar, ` ${done}/${counts.total}`),
        counts.failed, b.credits_used, created];
    }), "No batches yet.");
  }

  $("#batches-form").addEventListener("change", () => run(showBatches));
  onSubmit("#batches-form", showBatches);

  // --- sign-in and navigation -------------------------------------------------------------

  const VIEWS = { providers: loadProviders, models: loadModels, routes: loadRoutes,
    workspaces: loadWorkspaces, usage: loadUsage, batches: loadBatches };

  function show() {
    const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
    const wanted = location.hash.slice(1);
    const view = !signedIn ? "login" : Object.hasOwn(VIEWS, wanted) ? wanted : "providers";
    for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== view;
    $("#tabs").hidden = $("#logout").hidden = !signedIn;
    for (const link of document.querySelectorAll("#tabs a")) {
      link.classList.toggle("active", link.hash === "#" + view);
    }
    if (signedIn) run(VIEWS[view]);
  }

  onSubmit("#login-form", async (form, node) => {
    sessionStorage.setItem(TOKEN_KEY, text(form, "token"));
    node.reset();
    show();
  });

  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    closeWorkspace();
    banner("#error");
    banner("#notice");
    show();
  });

  window.addEventListener("hashchange", show);
  show();
})();
