// Every subcommand registers itself here: one module per command.
import type { Argv } from 'yargs';

export type CommandModule = (y: Argv) => Argv;

export const commands: CommandModule[] = [];
