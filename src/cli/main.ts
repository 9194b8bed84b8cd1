#!/usr/bin/env node
/**
 * The `corral` command: run, info, bench, demo, build-native. Uses only the library's public API
 * (../index.js); build-native runs the package's scripts/build-native.mjs.
 * Exit status: 0 success, 1 some items failed, 2 usage or setup error, 130 interrupted.
 */
import { UsageError } from './args.js';
import { paint, useColor } from './progress.js';
import { EXIT, runCommand, SetupError } from './run.js';

const COMMANDS: Record<string, { about: string; load: () => Promise<(argv: string[]) => Promise<number>> }> =
  {
    run: {
      about: 'map an exported function over JSON Lines, under resource limits',
      load: async () => runCommand,
    },
    info: {
      about: 'what this machine and container let corral use (CPUs, memory, limits, pool sizes)',
      load: async () => (await import('./info.js')).infoCommand,
    },
    bench: {
      about: 'inline vs corral threads vs corral processes on this machine',
      load: async () => (await import('./bench.js')).benchCommand,
    },
    demo: {
      about: 'a built-in job on all cores: progress, speedup, memory, a contained memory breach',
      load: async () => (await import('./demo.js')).demoCommand,
    },
    worker: {
      about:
        'serve a BullMQ queue on Redis from this machine (the pool of `new Pool({ backend: { bullmq } })`)',
      load: async () => (await import('./worker.js')).workerCommand,
    },
    'build-native': {
      about: 'build the native addons from source, where no prebuilt one fits this machine',
      load: async () => (await import('./build-native.js')).buildNativeCommand,
    },
  };

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length)) + 2;
  return [
    'usage: corral <command> [options]',
    '',
    'Resource-bounded worker pools for Node.js.',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.about}`),
    '',
    "'corral <command> --help' shows the options of a command.",
    'Exit status: 0 success, 1 some items failed, 2 usage or setup error, 130 interrupted.',
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(mainHelp());
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  if (command === '--version' || command === '-v') {
    const pkg = await import('node:fs').then((fs) =>
      JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')),
    );
    process.stdout.write(`corral ${pkg.version}\n`);
    return EXIT.ok;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    const { closest } = await import('./format.js');
    const guess = closest(command, Object.keys(COMMANDS));
    throw new UsageError(`unknown command '${command}'${guess ? ` (did you mean '${guess}'?)` : ''}`);
  }
  const fn = await entry.load();
  try {
    return await fn(rest);
  } catch (error) {
    if (error instanceof UsageError && !error.command) throw new UsageError(error.message, command);
    if (error instanceof SetupError) throw Object.assign(error, { command });
    throw error;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    paint.on = useColor(process.stderr);
    const command = (error as { command?: string }).command;
    const prefix = `corral${command ? ` ${command}` : ''}`;
    if (error instanceof UsageError) {
      process.stderr.write(
        `${prefix}: ${paint.red('error:')} ${error.message}\n` +
          `Run 'corral${command ? ` ${command}` : ''} --help' for the options.\n`,
      );
      process.exitCode = EXIT.usage;
    } else if (error instanceof SetupError) {
      process.stderr.write(`${prefix}: ${paint.red('error:')} ${error.message}\n`);
      process.exitCode = EXIT.usage;
    } else {
      process.stderr.write(
        `${prefix}: ${paint.red('internal error:')} ${(error as Error)?.stack ?? String(error)}\n`,
      );
      process.exitCode = EXIT.usage;
    }
  },
);
