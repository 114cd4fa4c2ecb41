// The shared token from a file (`--token-file`), so it never appears on a command line (where
// `ps` and the scheduler's job records show it). As ssh does with private keys, a file that
// group or others could read is refused: the token is only as secret as its file.

import fs from 'node:fs';
import { CliError } from '../errors.js';

/** Read and check a token file: a regular file, permissions 0600 or stricter, not empty. */
export function readTokenFile(file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new CliError(
      `--token-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  if (!st.isFile()) throw new CliError(`--token-file ${file}: not a regular file`);
  const loose = st.mode & 0o077;
  if (loose !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new CliError(
      `--token-file ${file}: permissions ${mode} are too open: group or others may access it; it must be readable by its owner only (chmod 600 ${file})`,
    );
  }
  const token = fs.readFileSync(file, 'utf8').trim();
  if (token === '') throw new CliError(`--token-file ${file}: the file is empty`);
  if (/[\r\n]/.test(token)) throw new CliError(`--token-file ${file}: the token must be a single line`);
  return token;
}

/**
 * The token a command uses: --token-file, else --token, else $ATLASVAE_TOKEN_FILE, else
 * $ATLASVAE_TOKEN (undefined when none is given).
 */
export function resolveToken(
  flags: { token?: string; tokenFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (flags.token !== undefined && flags.tokenFile !== undefined)
    throw new CliError('--token and --token-file: give one of them');
  if (flags.tokenFile !== undefined) return readTokenFile(flags.tokenFile);
  if (flags.token !== undefined) return flags.token;
  if (env.ATLASVAE_TOKEN_FILE) return readTokenFile(env.ATLASVAE_TOKEN_FILE);
  return env.ATLASVAE_TOKEN || undefined;
}
