// The login form (login.html): checks the credentials with GET /system/info -- the same check and the
// same failed-login throttle as every /system/* request -- keeps them in this tab, and goes back.

import { basicAuth, errorText, saveAuth } from "./api.js";
import { $, showError } from "./dom.js";

const PAGES = /^(index|function|deploy|snippets)\.html(\?[^#]*)?$/;

/** Where to go after logging in: a page of the UI named in ?next=, never anywhere else. */
function next() {
  const wanted = new URLSearchParams(location.search).get("next") || "";
  return PAGES.test(wanted) ? wanted : "./";
}

async function login(event) {
  event.preventDefault();
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  const header = basicAuth($("login-user").value, $("login-password").value);
  try {
    const response = await fetch("/system/info", {
      headers: { Authorization: header },
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
    });
    if (response.ok) {
      saveAuth(header);
      location.replace(next());
      return;
    }
    if (response.status === 401) {
      showError("Wrong user or password.");
    } else if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      showError(`Too many failed logins from this address: try again in ${wait || "a few"} s.`);
    } else {
      showError(`The daemon answered ${response.status}: ${await errorText(response)}`);
    }
    $("login-password").select();
  } catch (error) {
    showError(`Cannot reach the daemon: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

$("login").addEventListener("submit", login);
$("login-password").focus();
