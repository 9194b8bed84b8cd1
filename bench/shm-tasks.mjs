// Tasks for bench/shm-pool.mjs: sum a Float64Array given as a copy or as shared memory.
export function sumArray(a) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s;
}

export function sumShared(shm) {
  return sumArray(shm.view(Float64Array));
}
