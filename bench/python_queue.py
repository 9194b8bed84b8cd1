"""Python's multiprocessing.Queue doing what bench/queue.mjs measures for corral.

A producer process puts N small dicts {'id': i, 'tag': 'job'} on a Queue(maxsize=10000), then a
None sentinel; the consumer is the main process (worker -> main) or another process
(worker -> worker). Prints the median seconds of --runs runs of each as JSON.

    python3 bench/python_queue.py --items 1000000 --runs 3
"""

import argparse
import json
import multiprocessing as mp
import statistics
import time


def produce(q, n):
    for i in range(n):
        q.put({'id': i, 'tag': 'job'})
    q.put(None)


def consume(q, out=None):
    n = 0
    while q.get() is not None:
        n += 1
    if out is not None:
        out.put(n)
    return n


def worker_to_main(n):
    q = mp.Queue(maxsize=10_000)
    start = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n))
    p.start()
    got = consume(q)
    elapsed = time.perf_counter() - start
    p.join()
    assert got == n, (got, n)
    return elapsed


def worker_to_worker(n):
    q = mp.Queue(maxsize=10_000)
    out = mp.Queue()
    c = mp.Process(target=consume, args=(q, out))
    c.start()
    start = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n))
    p.start()
    got = out.get()
    elapsed = time.perf_counter() - start
    p.join()
    c.join()
    assert got == n, (got, n)
    return elapsed


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--items', type=int, default=1_000_000)
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args()
    mp.set_start_method('fork')
    times = {'worker_to_main': [], 'worker_to_worker': []}
    for _ in range(args.runs):
        times['worker_to_main'].append(worker_to_main(args.items))
        times['worker_to_worker'].append(worker_to_worker(args.items))
    print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
