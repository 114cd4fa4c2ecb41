// SIGINT/SIGTERM for long-running commands: the first asks the command to stop cleanly (finish or
// abandon the current step, write a checkpoint when one was asked for); a second exits at once.

export interface StopSignals {
  /** the signal received first, or null */
  readonly received: string | null;
  /** remove the handlers (the default behaviour, exit on signal, returns) */
  dispose(): void;
}

/** Exit status of a process ended by a second signal: 128 + the signal's number, as a shell reports it. */
const EXIT_STATUS: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export function onStopSignals(stop: (signal: string) => void): StopSignals {
  let received: string | null = null;
  const handler = (signal: NodeJS.Signals): void => {
    if (received !== null) {
      process.stderr.write(`\natlasvae: ${signal} again: exiting now\n`);
      process.exit(EXIT_STATUS[signal] ?? 130);
    }
    received = signal;
    stop(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    get received() {
      return received;
    },
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
