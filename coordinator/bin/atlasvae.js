#!/usr/bin/env node
// The `atlasvae` command as npm links it (node_modules/.bin/atlasvae). npm links a bin only when
// its target exists at install time, and dist/ is built after that (by the root's `prepare`
// script, or `npm run build`), so the link points at this committed file, which loads the
// compiled CLI, or says how to build it.
import fs from 'node:fs';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!fs.existsSync(fileURLToPath(cli))) {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  process.stderr.write(`atlasvae: not built yet: run \`npm run build\` in ${root}\n`);
  process.exit(1);
}
await import(cli.href);
