// ESLint flat config: typescript-eslint's type-checked rules over every package's sources, tests and
// benchmarks. Formatting is Prettier's job (`npm run format:check`), so no stylistic rules here.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', 'node_modules/**', 'out/**', 'runs/**', '.bench/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // The reasons this config exists: a promise nobody awaits loses its error, and a promise
      // passed where a callback's result is ignored (ws handlers, timers) does too.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test's test() and describe() return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // A switch over a union must name every member (or have a default), so a new message type or
      // backend cannot fall through silently.
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true },
      ],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      // Numbers and booleans in template strings are how log lines and errors are written here.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowNullish: true },
      ],
      // Methods that implement a Promise-returning interface (sources, writers, engines) are async
      // so that a throw becomes a rejection; an await inside is not what makes them right.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Tests parse the CLI's JSON output and fixtures and assert on their fields: the assertions are
    // the type check there.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
  {
    // Plain JavaScript outside every tsconfig: this config and the committed bin shim.
    files: ['eslint.config.js', 'coordinator/bin/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
