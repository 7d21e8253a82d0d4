// Builds {{name}}.js into a WebAssembly component for the `{{world}}` world of
// wit/quiver-plugin.wit and writes it to the path given as the only argument:
//
//   node build.mjs {{name}}.wasm          (npm run build; `quiver plugin build` does the same)
//
// componentize-js embeds the StarlingMonkey (SpiderMonkey) engine and pre-initialises it with the
// module, so the component is large (~12 MB, mostly the engine) but starts without parsing
// JavaScript. Outbound HTTP and the fetch event are disabled: a plugin has no network anyway.
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
  sourcePath: resolve(here, '{{name}}.js'),
  witPath: resolve(here, 'wit/quiver-plugin.wit'),
  worldName: '{{world}}',
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`{{name}}: ${component.length} bytes in ${seconds}s -> ${out}`);
