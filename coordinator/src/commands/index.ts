// Every subcommand registers itself here: one module per command.
import type { Argv } from 'yargs';

export type CommandModule = (y: Argv) => Argv;

import { simulateCommand } from './simulate.js';

export const commands: CommandModule[] = [
  simulateCommand,
];
