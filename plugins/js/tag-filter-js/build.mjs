// Builds tag-filter.js into a WebAssembly component for the `filter` world of
// wit/quiver-plugin.wit and writes it to the path given as the only argument:
//
//   node build.mjs ../../../target/plugins/tag-filter-js.wasm
//
// componentize-js embeds the StarlingMonkey (SpiderMonkey) engine and pre-initialises it with the
// module, so the component is large (the engine) but starts without parsing JavaScript. Outbound
// HTTP and the fetch event are disabled; the engine still imports a few WASI interfaces (stdio,
// clocks, random), which the broker satisfies from an empty context.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out || process.argv.length > 3) {
  console.error('usage: node build.mjs OUTPUT.wasm');
  process.exit(2);
}

const started = Date.now();
const { component } = await componentize({
  sourcePath: resolve(here, 'tag-filter.js'),
  witPath: resolve(here, '../../../wit/quiver-plugin.wit'),
  worldName: 'filter',
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`tag-filter-js: ${component.length} bytes in ${seconds}s -> ${out}`);
