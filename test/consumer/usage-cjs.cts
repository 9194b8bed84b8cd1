// The same package from a CommonJS TypeScript file (compiled to require('corral')).
import { Pool } from 'corral';

export async function fromCommonJs(): Promise<number[]> {
  const pool = new Pool<{ square(x: number): number }>({ module: require.resolve('./tasks.mjs') });
  try {
    return await pool.map('square', [1, 2]);
  } finally {
    await pool.close();
  }
}
