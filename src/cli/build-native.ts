/**
 * `corral build-native`: builds the native addons from source for this machine and this Node,
 * into the package's prebuilds/<platform>-<arch>/ where the loader looks. The fix for a machine
 * the shipped prebuilds do not cover (another architecture, an older C library, a Node whose
 * ABI has no prebuild). The work is scripts/build-native.mjs, shipped with the package, run
 * with --strict so that a build that did not happen is a failure here, not a silent skip.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type FlagSpec, formatHelp, parseFlags, UsageError } from './args.js';
import { EXIT } from './pool-setup.js';

const FLAGS: FlagSpec[] = [
  {
    name: 'node',
    type: 'string',
    value: 'MAJORS',
    default: 'the running Node only',
    help: 'also build the shared-memory addon for these Node majors, e.g. 22,24 (fetched with npx)',
  },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

const SCRIPT = fileURLToPath(new URL('../../../scripts/build-native.mjs', import.meta.url));

export async function buildNativeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('build-native', argv, FLAGS);
  if (values.help) {
    process.stdout.write(
      `${formatHelp(
        'corral build-native [--node 22,24]',
        "Builds corral's native addons (rlimits, cross-process SharedMemory) from source for this machine\n" +
          'and this Node: for platforms or Node versions the shipped prebuilds do not cover.\n' +
          'Needs python3, make and a C/C++ compiler; node-gyp comes with npm.',
        FLAGS,
      )}\n`,
    );
    return EXIT.ok;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const majors = typeof values.node === 'string' ? values.node : undefined;
  if (majors !== undefined && !/^\d+(,\d+)*$/.test(majors)) {
    throw new UsageError(`--node expects Node majors like 22,24; got '${majors}'`);
  }
  const r = spawnSync(process.execPath, [SCRIPT, '--strict', ...(majors ? [`--node=${majors}`] : [])], {
    stdio: 'inherit',
  });
  if (r.error) throw r.error;
  return r.status === 0 ? EXIT.ok : EXIT.usage;
}
