// The console's shell: the login form, the navigation and the page router (`#/<page>`).

import { call, describe, forgetKey, saveKey, savedKey, whenUnauthorized } from "./api";
import { h, replace } from "./dom";
import { middleware } from "./middleware";
import { overview } from "./overview";
import type { Page } from "./page";
import { realtime } from "./realtime";
import { sessions } from "./sessions";
import { streams } from "./streams";

const PAGES: [string, string, Page][] = [
  ["overview", "Overview", overview],
  ["sessions", "Sessions", sessions],
  ["realtime", "Realtime", realtime],
  ["streams", "Streams", streams],
  ["middleware", "Middleware", middleware],
];

const app = document.getElementById("app") as HTMLElement;
let unmount: (() => void) | null = null;
// Whether the console (not the login form) is showing: a 401 then means the key went stale.
let inConsole = false;

function showLogin(problem?: string): void {
  inConsole = false;
  unmount?.();
  unmount = null;
  const key = h("input", {
    type: "password",
    name: "key",
    autocomplete: "off",
    placeholder: "admin key or API key",
    "data-testid": "login-key",
  });
  const message = h("p", { class: "message", "data-testid": "login-message" }, problem ?? "");
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: async (event) => {
        event.preventDefault();
        saveKey(key.value.trim());
        const info = await call("GET", "/admin/api/info");
        if (info.ok) {
          showConsole();
        } else {
          forgetKey();
          message.textContent = `Login refused: ${describe(info)}`;
        }
      },
    },
    h("h1", {}, "sessiond admin"),
    key,
    h("button", { type: "submit", "data-testid": "login" }, "Log in"),
    message,
  );
  replace(app, form);
  key.focus();
}

function showConsole(): void {
  inConsole = true;
  const main = h("main", { "data-testid": "page" });
  const links = PAGES.map(([id, title]) => h("a", { href: `#/${id}`, "data-page": id, "data-testid": `nav-${id}` }, title));
  const logout = h("button", { class: "link", "data-testid": "logout", onclick: () => (forgetKey(), showLogin()) }, "Log out");
  replace(app, h("header", {}, h("strong", {}, "sessiond"), h("nav", {}, ...links), logout), main);
  const route = () => {
    const id = location.hash.replace(/^#\/?/, "") || "overview";
    const page = PAGES.find(([name]) => name === id) ?? PAGES[0];
    for (const link of links) link.classList.toggle("active", link.dataset.page === page[0]);
    unmount?.();
    unmount = page[2].mount(main);
  };
  window.onhashchange = route;
  route();
}

whenUnauthorized(() => {
  if (!inConsole) return;
  forgetKey();
  showLogin("The server refused the key (it may have been rotated): log in again.");
});

async function start(): Promise<void> {
  if (savedKey() === null) {
    // In open development mode the server needs no key: try without one first.
    const open = await call("GET", "/admin/api/info").catch(() => null);
    if (open?.ok) {
      saveKey("");
      showConsole();
      return;
    }
    showLogin();
    return;
  }
  showConsole();
}

void start();
