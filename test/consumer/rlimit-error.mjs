// Asks for an rlimit and prints what happens, as JSON: { ok } or the error's code and message.
import { Pool } from 'corral';

try {
  const pool = new Pool({
    module: new URL('./tasks.mjs', import.meta.url),
    runtime: 'process',
    workers: 1,
    limits: { openFiles: 128 },
  });
  const { openFiles } = await pool.apply('limits', []);
  await pool.close();
  console.log(JSON.stringify({ ok: true, openFiles }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, code: error.code, message: error.message }));
}
