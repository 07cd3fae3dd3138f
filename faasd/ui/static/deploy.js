// The deploy form (deploy.html): POST /system/functions with what was filled in, then the function's page.

import { call, getJson } from "./api.js";
import { $, el, functionHref, parsePairs, setupPage, showError, clearError } from "./dom.js";

async function loadSecrets() {
  const box = $("secrets");
  const secrets = await getJson("/system/secrets");
  if (!secrets.length) {
    box.replaceChildren(el("p", { class: "help", text: "None yet (faasd secret create NAME)." }));
    return;
  }
  box.replaceChildren(
    ...secrets.map(({ name }, index) =>
      el(
        "div",
        { class: "check" },
        el("input", { type: "checkbox", id: `secret-${index}`, name: "secret", value: name }),
        el("label", { for: `secret-${index}`, text: name }),
      ),
    ),
  );
}

/** The FunctionDeployment document the form describes (throws, saying what is wrong). */
function deployment() {
  const name = $("deploy-name").value.trim();
  const envProcess = $("deploy-fprocess").value.trim();
  const image = $("deploy-image").value.trim();
  if (!envProcess && !image) throw new Error("Give a command (fprocess), an image, or both.");
  const envVars = parsePairs($("deploy-env").value, "Environment");
  const mode = $("deploy-mode").value;
  if (mode !== "fork") envVars.mode = mode;
  const labels = parsePairs($("deploy-labels").value, "Labels");
  const secrets = [...document.querySelectorAll("input[name=secret]:checked")].map((box) => box.value);
  const document_ = { service: name, image, envProcess, envVars, labels, secrets };
  for (const key of Object.keys(document_)) {
    const value = document_[key];
    if (value === "" || (typeof value === "object" && !Object.keys(value).length)) delete document_[key];
  }
  return document_;
}

async function deploy(event) {
  event.preventDefault();
  const button = event.target.querySelector("button[type=submit]");
  const state = $("deploy-state");
  button.disabled = true;
  try {
    const spec = deployment();
    const existing = await getJson("/system/functions");
    if (!$("deploy-replace").checked && existing.some((status) => status.name === spec.service)) {
      throw new Error(`A function named ${spec.service} exists: tick "Replace" to deploy over it.`);
    }
    state.textContent = `Deploying ${spec.service}…`;
    await call("/system/functions", { method: "POST", json: spec });
    clearError();
    location.assign(functionHref(spec.service));
  } catch (error) {
    state.textContent = "";
    showError(error);
  } finally {
    button.disabled = false;
  }
}

if (setupPage()) {
  $("deploy").addEventListener("submit", deploy);
  loadSecrets()
    .catch(showError)
    .finally(() => {
      document.body.dataset.loaded = "true";
    });
}
