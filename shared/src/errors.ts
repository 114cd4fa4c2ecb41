// Errors meant for the user: a clear message naming the file and the problem, no stack trace.

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Bad input data: names the file (or source) and what is wrong with it. */
export class InputError extends CliError {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`, 1);
    this.name = 'InputError';
  }
}
