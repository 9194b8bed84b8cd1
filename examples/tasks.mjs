// Task module for the quick start: its exports are the tasks a Pool can run.

/** Counts the primes in [from, to) by trial division: deliberately CPU-bound. */
export function countPrimes([from, to]) {
  let count = 0;
  for (let n = Math.max(2, from); n < to; n++) {
    let prime = true;
    for (let d = 2; d * d <= n; d++) {
      if (n % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) count++;
  }
  return count;
}

/** A task that fails, to show how errors come back. */
export function explode(message) {
  const error = new Error(message);
  error.code = 'E_DEMO';
  throw error;
}

/** A task whose worker dies, to show that the pool survives it. */
export function crash() {
  process.exit(7);
}
