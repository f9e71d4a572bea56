// Builds the demo into dist/ (committed: the gateway embeds it and serves it at / in dev mode, so
// `cargo run -p herald-gateway -- --dev` shows it without npm). The output is deterministic;
// scripts/clients rebuilds it and fails when the committed copy differs.

import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const here = (path) => new URL(path, import.meta.url).pathname;
mkdirSync(here("dist"), { recursive: true });
await build({
  entryPoints: [here("src/main.tsx")],
  outfile: here("dist/app.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync(here("src/index.html"), here("dist/index.html"));
copyFileSync(here("src/styles.css"), here("dist/styles.css"));
