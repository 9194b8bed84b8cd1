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

/**
 * emitter.emit(event, ...args) with each listener through callBack: none can throw into the caller,
 * and one that throws does not keep the event from the listeners after it. (rawListeners: a `once`
 * listener's wrapper, which removes it as it runs.)
 */
export function emitSafely(
  emitter: { rawListeners(event: string): unknown[] },
  event: string,
  ...args: unknown[]
): void {
  for (const listener of emitter.rawListeners(event)) {
    callBack(`'${event}' listener`, () => {
      (listener as (...a: unknown[]) => unknown).apply(emitter, args);
    });
  }
}
