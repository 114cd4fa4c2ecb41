#!/usr/bin/env node
// The `atlasvae` command line: one yargs program, one module per subcommand (./commands/).
import { createRequire } from 'node:module';
import type { Argv } from 'yargs';
import type YargsFactory from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';
import { CliError, configureLogging, log, LOG_FORMATS, LOG_LEVELS } from '@atlasvae/shared';
import { tuneGarbageCollector } from '@atlasvae/shared/runtime';

// yargs' CommonJS build: its help layout wraps at word boundaries (wrap-ansi); the ES module
// build's cliui cuts words at the column limit
const yargs = createRequire(import.meta.url)('yargs') as typeof YargsFactory;

async function main(): Promise<void> {
  try {
    tuneGarbageCollector();
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  let cli: Argv = yargs(hideBin(process.argv))
    .scriptName('atlasvae')
    .usage(
      '$0 <command> [options]\n\nTrain scVI variational autoencoders on single-cell atlases, data-parallel over WebSocket workers.',
    )
    .strict()
    .demandCommand(1, 'Name a command (see the list above).')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .option('log-format', {
      choices: LOG_FORMATS,
      default: 'text' as const,
      global: true,
      describe: 'log lines for people (text) or one JSON object per line for cluster log collectors (json)',
    })
    .option('log-level', {
      choices: LOG_LEVELS,
      default: 'info' as const,
      global: true,
      describe: 'least severe level logged',
    })
    .middleware((argv) => configureLogging({ format: argv['log-format'], level: argv['log-level'] }))
    .fail((msg, err) => {
      if (err) throw err;
      console.error(msg);
      console.error('Run `atlasvae --help` for usage.');
      process.exit(2);
    });
  for (const c of commands) cli = c(cli);
  // one example per command, in the order of a typical run (each command's --help has more)
  cli = cli
    .example(
      '$0 demo',
      'simulate a demo atlas, train it with 2 local workers, write a checkpoint and embedding',
    )
    .example(
      '$0 simulate --cells 100000 --genes 2000 --out atlas/',
      'a synthetic atlas as a prepared dataset',
    )
    .example(
      '$0 prepare pbmc.h5ad --out pbmc/ --batch-key sample --label-key cell_type --n-top-genes 2000',
      'an .h5ad, 10x .h5 or MTX folder into Arrow shards',
    )
    .example(
      '$0 train-local --mtx data/pbmc --batch-key batch --epochs 100 --out pbmc.ckpt',
      'single-process training on a MatrixMarket folder',
    )
    .example(
      '$0 train --data pbmc/ --local-workers 2 --checkpoint run/model.ckpt',
      'a coordinator and 2 worker processes on this machine',
    )
    .example(
      '$0 coordinator --data pbmc/ --port 8787 --token $T --min-workers 4 --checkpoint run/model.ckpt',
      'a coordinator for workers on other hosts',
    )
    .example('$0 worker --connect ws://head:8787 --token $T --backend auto', 'a worker joining a coordinator')
    .example(
      '$0 embed --checkpoint run/model.ckpt --data pbmc/ --out pbmc_latent.h5ad',
      "latent means into obsm['X_atlasvae'] of a copy of the source .h5ad",
    )
    .example(
      '$0 normalize --checkpoint run/model.ckpt --data pbmc/ --genes CD3E,MS4A1 --out expr.csv',
      'scVI normalized expression',
    )
    .example(
      '$0 evaluate --checkpoint run/model.ckpt --data pbmc/ --out report.json',
      'ELBO, marginal likelihood, kNN accuracy, batch mixing',
    )
    .example(
      '$0 umap --checkpoint run/model.ckpt --data pbmc/ --color-by label --out umap.png',
      'a UMAP picture of the latent space',
    );
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
  if (json)
    log.error(err instanceof Error ? err.message : String(err), {
      stack: err instanceof Error ? err.stack : undefined,
      exitCode: 1,
    });
  else console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
