/**
 * AbortSignals of calls, watched with one listener per signal whatever the number of calls sharing
 * it, and forgotten as each call settles: a signal passed to a thousand calls holds one listener
 * while any of them is pending and none after, and keeps no settled unit (or its payload) alive.
 */
import type { Unit } from './unit.js';

interface Watched {
  units: Set<Unit>;
  listener: () => void;
}

export class SignalWatch {
  private readonly bySignal = new Map<AbortSignal, Watched>();

  constructor(private readonly aborted: (unit: Unit) => void) {}

  watch(unit: Unit): void {
    const signal = unit.signal;
    if (!signal) return;
    if (signal.aborted) {
      // Fired before this unit was (re)queued: no event will come for it.
      queueMicrotask(() => this.aborted(unit));
      return;
    }
    let watched = this.bySignal.get(signal);
    if (!watched) {
      const units = new Set<Unit>();
      const listener = (): void => {
        this.bySignal.delete(signal);
        for (const u of units) this.aborted(u);
        units.clear();
      };
      watched = { units, listener };
      this.bySignal.set(signal, watched);
      signal.addEventListener('abort', listener, { once: true });
    }
    watched.units.add(unit);
  }

  unwatch(unit: Unit): void {
    const signal = unit.signal;
    if (!signal) return;
    const watched = this.bySignal.get(signal);
    if (!watched?.units.delete(unit) || watched.units.size > 0) return;
    this.bySignal.delete(signal);
    signal.removeEventListener('abort', watched.listener);
  }
}
