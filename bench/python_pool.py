"""Python multiprocessing.Pool(2) counterpart of bench/run.mjs.

Usage: python3 bench/python_pool.py <workload> <n> [runs]

Workloads: map, apply, fib, skewed, startup. Runs one warm-up and then `runs` (default 5) timed
runs, each with a fresh Pool(2) that is closed and joined afterwards, and prints one JSON object:
{"workload", "n", "start_method", "python", "samples": [ms, ...]} (startup adds "shutdown": [ms, ...]).
Only the work itself is timed: the pool is started and both workers have answered first.
"""

import json
import os
import multiprocessing as mp
import sys
import time

WORKERS = 2
FIB_N = 30


def square(x):
    return x * x


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def busy(ms):
    end = time.perf_counter() + ms / 1000
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


def mulberry32(seed):
    """The same generator as run.mjs, so both shuffle the skewed tasks identically."""
    state = seed & 0xFFFFFFFF

    def imul(a, b):
        return (a * b) & 0xFFFFFFFF

    def rnd():
        nonlocal state
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = imul(t ^ (t >> 15), t | 1)
        t = (t ^ ((t + imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296

    return rnd


def skewed_order(short, long, short_ms=5, long_ms=200, seed=42):
    order = [short_ms] * short + [long_ms] * long
    rnd = mulberry32(seed)
    for i in range(len(order) - 1, 0, -1):
        j = int(rnd() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def started_pool():
    pool = mp.Pool(WORKERS)
    # Both workers answer once before timing starts (each busy call holds one worker for 30 ms).
    pool.map(busy, [30] * WORKERS, chunksize=1)
    return pool


def timed(fn):
    pool = started_pool()
    try:
        t0 = time.perf_counter()
        fn(pool)
        return (time.perf_counter() - t0) * 1000
    finally:
        pool.close()
        pool.join()


def run_map(n):
    items = range(n)
    return timed(lambda pool: pool.map(square, items))


def run_apply(n):
    def work(pool):
        pending = [pool.apply_async(square, (i,)) for i in range(n)]
        for p in pending:
            p.get()

    return timed(work)


def run_fib(n):
    return timed(lambda pool: pool.map(fib, [FIB_N] * n, chunksize=1))


def run_skewed(order):
    return timed(lambda pool: list(pool.imap_unordered(busy, order, chunksize=1)))


def run_startup():
    t0 = time.perf_counter()
    pool = mp.Pool(WORKERS)
    pool.apply(square, (1,))
    t1 = time.perf_counter()
    pool.close()
    pool.join()
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: python_pool.py <map|apply|fib|skewed|startup> <n> [runs]")
    workload, n = sys.argv[1], int(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    out = {
        "workload": workload,
        "n": n,
        "start_method": mp.get_start_method(),
        "python": sys.version.split()[0],
    }
    if workload == "startup":
        pairs = [run_startup() for _ in range(runs + 1)][1:]
        out["samples"] = [p[0] for p in pairs]
        out["shutdown"] = [p[1] for p in pairs]
    else:
        if workload == "skewed":
            # run.mjs passes the task durations of other mixes (the log-normal one) in SKEW_ORDER.
            given = os.environ.get("SKEW_ORDER")
            order = json.loads(given) if given else skewed_order(n - n * 6 // 40, n * 6 // 40)
            out["order"] = order
            one = lambda: run_skewed(order)  # noqa: E731
        else:
            fns = {"map": run_map, "apply": run_apply, "fib": run_fib}
            if workload not in fns:
                sys.exit(f"unknown workload {workload!r}")
            one = lambda: fns[workload](n)  # noqa: E731
        out["samples"] = [one() for _ in range(runs + 1)][1:]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
