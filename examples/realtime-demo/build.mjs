// Builds the demo page into dist/: the React app bundled by esbuild from clients/js sources,
// plus index.html. Tools come from clients/js/node_modules (run `npm ci` there first).
import { copyFile, mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const clientPackage = here("../../clients/js/package.json");
const esbuild = createRequire(clientPackage)("esbuild");

await mkdir(here("dist"), { recursive: true });
await esbuild.build({
  entryPoints: [here("src/main.tsx")],
  outfile: here("dist/app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  minify: true,
  sourcemap: true,
  // React itself lives in clients/js's dev dependencies.
  nodePaths: [here("../../clients/js/node_modules")],
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
await copyFile(here("index.html"), here("dist/index.html"));
console.log(`demo built: ${here("dist")}`);
