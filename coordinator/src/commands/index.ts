// Every subcommand registers itself here: one module per command.
import type { Argv } from 'yargs';
import { simulateCommand } from './simulate.js';
import { coordinatorCommand } from './coordinator.js';
import { workerCommand } from './worker.js';
import { trainCommand } from './train.js';

export type CommandModule = (y: Argv) => Argv;

export const commands: CommandModule[] = [
  simulateCommand,
  coordinatorCommand,
  workerCommand,
  trainCommand,
];
