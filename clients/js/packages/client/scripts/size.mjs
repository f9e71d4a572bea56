// The SDK's size budget: the whole package bundled and minified (esbuild), then gzipped, must stay
// under BUDGET_BYTES. Anchor: centrifuge-js 5.x, the closest peer, is measured the same way in
// docs/benchmarks.md ("Client bundle size").
//
//   node scripts/size.mjs            prints the size, fails over budget
//   node scripts/size.mjs <entry>    measures another entry point (e.g. a peer's module)

import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const BUDGET_BYTES = 6 * 1024;

const entry = process.argv[2] ?? fileURLToPath(new URL("../src/index.ts", import.meta.url));
const result = await build({
  entryPoints: [entry],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  write: false,
  logLevel: "silent",
});
const code = result.outputFiles[0].contents;
const gzipped = gzipSync(code, { level: 9 }).length;
console.log(`${entry}: ${code.length} bytes minified, ${gzipped} bytes gzipped (budget ${BUDGET_BYTES})`);
if (process.argv[2] === undefined && gzipped > BUDGET_BYTES) {
  console.error(`over the size budget by ${gzipped - BUDGET_BYTES} bytes`);
  process.exit(1);
}
