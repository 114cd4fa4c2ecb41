// Where tests find the repository and the shared test data (../shared beside the repository root).
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/** repository root (test/dist/helpers -> ../../..) */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** ../shared beside the repository, or ATLASVAE_SHARED */
export const sharedDir = process.env.ATLASVAE_SHARED ?? path.resolve(repoRoot, '../shared');

/** Path inside ../shared, or null when it is absent (tests then skip with a message). */
export function sharedPath(...parts: string[]): string | null {
  const p = path.join(sharedDir, ...parts);
  return fs.existsSync(p) ? p : null;
}

/** `skip` option value for node:test when a shared file is missing. */
export function skipUnlessShared(...parts: string[]): string | false {
  return sharedPath(...parts) ? false : `../shared/${parts.join('/')} is absent: skipped`;
}

/** The CLI entry point as built. */
export const cliPath = path.join(repoRoot, 'coordinator/dist/cli.js');

/** A fresh temporary directory. */
export function tempDir(prefix = 'atlasvae-test-'): string {
  return fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', prefix));
}
