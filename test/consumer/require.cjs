// CommonJS consumer: require('corral') on every Node that package.json's engines names.
const { Pool, cpuCount } = require('corral');

const pool = new Pool({ module: require.resolve('./tasks.mjs'), runtime: 'thread', workers: 2 });
pool
  .map('square', [1, 2, 3])
  .then(async (squares) => {
    await pool.close();
    console.log(JSON.stringify({ squares, cpus: cpuCount() }));
  })
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  });
