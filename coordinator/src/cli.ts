#!/usr/bin/env node
// The `atlasvae` command line: one yargs program, one module per subcommand (./commands/).
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';
import { CliError } from '@atlasvae/shared/errors';
import { configureLogging, log, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '@atlasvae/shared/log';

async function main(): Promise<void> {
  let cli: Argv = yargs(hideBin(process.argv))
    .scriptName('atlasvae')
    .usage('$0 <command> [options]\n\nTrain scVI variational autoencoders on single-cell atlases, data-parallel over WebSocket workers.')
    .strict()
    .demandCommand(1, 'Name a command (see the list above).')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .option('log-format', {
      choices: LOG_FORMATS,
      default: 'text' as LogFormat,
      global: true,
      describe: 'log lines for people (text) or one JSON object per line for cluster log collectors (json)',
    })
    .option('log-level', { choices: LOG_LEVELS, default: 'info' as LogLevel, global: true, describe: 'least severe level logged' })
    .middleware((argv) => configureLogging({ format: argv['log-format'] as LogFormat, level: argv['log-level'] as LogLevel }))
    .fail((msg, err) => {
      if (err) throw err;
      console.error(msg);
      console.error('Run `atlasvae --help` for usage.');
      process.exit(2);
    });
  for (const c of commands) cli = c(cli);
  await cli.parseAsync();
}

main().catch((err: unknown) => {
  // with --log-format json, the final error is a JSON line too (log collectors parse every line)
  const json = log.format === 'json';
  if (err instanceof CliError) {
    if (json) log.error(err.message, { exitCode: err.exitCode });
    else console.error(`atlasvae: ${err.message}`);
    process.exit(err.exitCode);
  }
  if (json) log.error(err instanceof Error ? err.message : String(err), { stack: err instanceof Error ? err.stack : undefined, exitCode: 1 });
  else console.error(err instanceof Error ? err.stack ?? err.message : String(err));
  process.exit(1);
});
