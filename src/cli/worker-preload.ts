/**
 * Loaded into every process worker of `corral run` (through NODE_OPTIONS=--import, which only process
 * workers read): the command's stdout carries the results, one JSON line per item, so whatever a task
 * prints goes to stderr instead; and Ctrl-C in a terminal reaches the whole process group, so workers
 * ignore SIGINT and let the command decide (finish what runs, then stop them).
 */
const own = /\s*--import=\S*worker-preload\.js\S*/;
if (process.env.NODE_OPTIONS) {
  // Processes the task itself starts must not inherit this.
  const rest = process.env.NODE_OPTIONS.replace(own, '').trim();
  if (rest) process.env.NODE_OPTIONS = rest;
  else delete process.env.NODE_OPTIONS;
}
process.stdout.write = ((...args: Parameters<typeof process.stdout.write>) =>
  process.stderr.write(...(args as Parameters<typeof process.stderr.write>))) as typeof process.stdout.write;
process.on('SIGINT', () => {});

export {};
