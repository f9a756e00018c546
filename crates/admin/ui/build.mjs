// Builds the admin console's script into ../assets (committed, embedded by the crate with
// include_str!): src/main.ts bundled by esbuild. index.html and app.css need no build: the
// crate embeds them from here as they are.
// `node build.mjs --check` builds in memory and fails when the committed files differ (the
// sources changed without a rebuild). Tools come from clients/js/node_modules (npm ci there).
import { readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const esbuild = createRequire(here("../../../clients/js/package.json"))("esbuild");

/** The files of ../assets, by name, as this source tree builds them. */
export async function build() {
  const result = await esbuild.build({
    entryPoints: [here("src/main.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "none",
    write: false,
    outfile: "app.js",
    logLevel: "warning",
  });
  return { "app.js": result.outputFiles[0].text };
}

/** Names of the committed assets that differ from a fresh build. */
export async function stale() {
  const fresh = await build();
  const differ = [];
  for (const [name, text] of Object.entries(fresh)) {
    const committed = await readFile(here(`../assets/${name}`), "utf8").catch(() => null);
    if (committed !== text) differ.push(name);
  }
  return differ;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes("--check")) {
    const differ = await stale();
    if (differ.length > 0) {
      console.error(`crates/admin/assets is stale (${differ.join(", ")}): run node crates/admin/ui/build.mjs`);
      process.exit(1);
    }
  } else {
    for (const [name, text] of Object.entries(await build())) {
      await writeFile(here(`../assets/${name}`), text);
    }
    console.log("admin console built into crates/admin/assets");
  }
}
