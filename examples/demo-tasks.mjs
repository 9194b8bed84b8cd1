// Task module of `corral demo` (and a worked example of a CPU-heavy task): renders one tile of a
// Mandelbrot atlas and measures it, as an image pipeline would (histogram, edge energy).

/**
 * Renders `tile.size` x `tile.size` pixels of the region [x0, x1] x [y0, y1] with at most `tile.maxIter`
 * iterations per pixel, then summarises the tile. The cost varies a lot from tile to tile (points inside
 * the set run every iteration), which is what real workloads look like: skewed.
 *
 * A tile with `greedy: true` stands for a pathological input (think decompression bomb): it allocates
 * without end. Under a per-worker heap limit the worker dies and the pool replaces it; nothing else is lost.
 */
export function renderTile(tile) {
  if (tile.greedy) {
    // A decoder gone wrong: it keeps growing its pixel buffer (plain JS arrays, 8 MiB each) and never ends.
    const buffers = [];
    for (let i = 0; ; i++) buffers.push(new Array(1 << 20).fill(i));
  }
  const { size, maxIter, x0, y0, x1, y1 } = tile;
  const pixels = new Float32Array(size * size);
  const dx = (x1 - x0) / size;
  const dy = (y1 - y0) / size;
  let inside = 0;
  let sum = 0;
  for (let py = 0; py < size; py++) {
    const ci = y0 + (py + 0.5) * dy;
    for (let px = 0; px < size; px++) {
      const cr = x0 + (px + 0.5) * dx;
      let zr = 0;
      let zi = 0;
      let n = 0;
      while (n < maxIter && zr * zr + zi * zi <= 4) {
        const t = zr * zr - zi * zi + cr;
        zi = 2 * zr * zi + ci;
        zr = t;
        n++;
      }
      let v = 1;
      if (n < maxIter) {
        // Smooth iteration count, scaled to 0..1 on a log scale.
        const smooth = n + 1 - Math.log2(Math.log2(zr * zr + zi * zi) / 2);
        v = Math.min(1, Math.log1p(Math.max(0, smooth)) / Math.log1p(maxIter));
      } else inside++;
      pixels[py * size + px] = v;
      sum += v;
    }
  }
  // What an image pipeline would keep: a histogram and the edge energy (Sobel), for search and thumbnails.
  const histogram = new Array(8).fill(0);
  let edges = 0;
  for (let y = 1; y < size - 1; y++) {
    for (let x = 1; x < size - 1; x++) {
      const p = (yy, xx) => pixels[yy * size + xx];
      const gx =
        p(y - 1, x + 1) +
        2 * p(y, x + 1) +
        p(y + 1, x + 1) -
        p(y - 1, x - 1) -
        2 * p(y, x - 1) -
        p(y + 1, x - 1);
      const gy =
        p(y + 1, x - 1) +
        2 * p(y + 1, x) +
        p(y + 1, x + 1) -
        p(y - 1, x - 1) -
        2 * p(y - 1, x) -
        p(y - 1, x + 1);
      edges += Math.hypot(gx, gy);
    }
  }
  for (let i = 0; i < pixels.length; i++) histogram[Math.min(7, Math.floor(pixels[i] * 8))]++;
  return {
    id: tile.id,
    mean: sum / pixels.length,
    inside: inside / pixels.length,
    edges: edges / ((size - 2) * (size - 2)),
    histogram,
  };
}
