// Every subcommand of the one `atlasvae` binary, in help order: one module per command, each in
// its role's package (the worker's in @atlasvae/worker, the rest here).
import type { Argv } from 'yargs';
import { simulateCommand } from './simulate.js';
import { prepareCommand } from './prepare.js';
import { coordinatorCommand } from './coordinator.js';
import { workerCommand } from '@atlasvae/worker/commands';
import { trainCommand } from './train.js';
import { embedCommand } from './embed.js';
import { normalizeCommand } from './normalize.js';
import { evaluateCommand } from './evaluate.js';
import { umapCommand } from './umap.js';
import { demoCommand } from './demo.js';
import { trainLocalCommand } from './train-local.js';

export type CommandModule = (y: Argv) => Argv;

export const commands: CommandModule[] = [
  simulateCommand,
  prepareCommand,
  coordinatorCommand,
  workerCommand,
  trainCommand,
  embedCommand,
  normalizeCommand,
  evaluateCommand,
  umapCommand,
  demoCommand,
  trainLocalCommand,
];
