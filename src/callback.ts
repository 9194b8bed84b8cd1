/**
 * User code the pool or a queue calls from inside its own bookkeeping: progress and event callbacks,
 * and the listeners of their events. One that throws must not cut that bookkeeping short (a
 * `workerExit` listener that threw left the dead worker's calls unsettled), so it is reported as a
 * warning and goes no further.
 */

/** Calls a user's callback; one that throws is reported as a warning and never reaches the pool. */
export function callBack(what: string, fn: () => void): void {
  try {
    fn();
  } catch (error) {
    process.emitWarning(
      `corral: the ${what} threw and was ignored: ${error instanceof Error ? error.message : String(error)}`,
      { code: 'CORRAL_CALLBACK_THREW', detail: error instanceof Error ? error.stack : undefined },
    );
  }
}

/** emitter.emit(event, ...args) through callBack: its listeners cannot throw into the caller. */
export function emitSafely(
  emitter: { emit(event: string, ...args: never[]): boolean },
  event: string,
  ...args: unknown[]
): void {
  callBack(`'${event}' listener`, () => {
    (emitter.emit as (event: string, ...args: unknown[]) => boolean)(event, ...args);
  });
}
