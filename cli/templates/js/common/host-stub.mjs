// For the unit tests only: lets `node --test` import {{name}}.js natively. The plugin imports
// `quiver:plugin/host@0.1.0`, which exists only inside the component; importing this file first
// maps that specifier to a stub whose `log` collects the lines in `logLines` (and `nowMs` reads the
// real clock). Not part of the component.
import { register } from 'node:module';

const stub = `export function log(level, message) { (globalThis.quiverLog ??= []).push([level, message]); }
export function nowMs() { return BigInt(Date.now()); }`;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'quiver:plugin/host@0.1.0') {
    return { url: ${JSON.stringify('data:text/javascript,' + encodeURIComponent(stub))}, shortCircuit: true };
  }
  return next(specifier, context);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));

/** The `[level, message]` lines logged since the last call, which clears them. */
export function logLines() {
  const lines = globalThis.quiverLog ?? [];
  globalThis.quiverLog = [];
  return lines;
}

/** `--config` settings as `init` receives them: `config({ tag: 'gold' })` -> `[{ key, value }]`. */
export function config(settings = {}) {
  return Object.entries(settings).map(([key, value]) => ({ key, value }));
}
