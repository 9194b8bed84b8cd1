/** workerpool's worker script: registers the benchmark tasks (workerpool cannot load a plain module). */
import workerpool from 'workerpool';
import { busy, fib, square, whoami } from './tasks.mjs';

workerpool.worker({ square, fib, busy, whoami });
