// What the built CLI accepts, read from its --help: deployment files (Kubernetes manifests,
// Dockerfiles, compose, Slurm) are checked against it so a renamed flag breaks a test, not a cluster.
import { execFileSync } from 'node:child_process';
import { cliPath } from './paths.js';

const cache = new Map<string, string>();

function help(args: string[]): string {
  const key = args.join(' ');
  if (!cache.has(key))
    cache.set(
      key,
      execFileSync(process.execPath, [cliPath, ...args, '--help'], {
        encoding: 'utf8',
        env: { ...process.env, COLUMNS: '200' },
      }),
    );
  return cache.get(key)!;
}

/** The subcommands `atlasvae --help` lists. */
export function cliCommands(): Set<string> {
  return new Set([...help([]).matchAll(/^ {2}atlasvae (\S+)/gm)].map((m) => m[1]!));
}

/** The long options of `atlasvae <command>` (global ones included). */
export function cliFlags(command: string): Set<string> {
  return new Set([...help([command]).matchAll(/(?:^|\s)--([a-z][a-z0-9-]*)/gm)].map((m) => m[1]!));
}

/** The flags of an argument list (`--x=1`, `--x 1`, `--x`) that `atlasvae <command>` does not know. */
export function unknownFlags(command: string, args: string[]): string[] {
  const known = cliFlags(command);
  return args
    .filter((a) => a.startsWith('--'))
    .map((a) => a.slice(2).split('=')[0]!)
    .filter((f) => !known.has(f) && !(f.startsWith('no-') && known.has(f.slice(3))));
}

/** The value of `--name` in an argument list (`--name=v` or `--name v`). */
export function flagValue(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i]!.startsWith(`--${name}=`)) return args[i]!.slice(name.length + 3);
  }
  return undefined;
}
