// One rule for every command that writes a file or folder: an existing output is replaced only
// with --force, so a finished model or result is never overwritten by accident.
import fs from 'node:fs';
import { CliError } from '@atlasvae/shared';

/** Throws when `file` exists and `force` is not set; `flag` names the option that chose it. */
export function refuseOverwrite(file: string, force: boolean, flag = '--out'): void {
  if (!force && fs.existsSync(file))
    throw new CliError(`${file} (${flag}) already exists; pass --force to replace it`);
}
