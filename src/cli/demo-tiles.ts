/** The demo's work: a Mandelbrot atlas cut into tiles, generated here (deterministically) as the input. */
import type { SourceItem } from './engine.js';

/** The region of the complex plane the atlas covers; its aspect ratio sets the grid. */
const REGION = { x0: -2.4, x1: 1.0, y0: -1.2, y1: 1.2 };
const TILE = { size: 48, maxIter: 1200 };

interface Tile {
  id: number;
  col: number;
  row: number;
  size: number;
  maxIter: number;
  x0: number;
  x1: number;
  y0: number;
  y1: number;
  greedy?: true;
}

export interface TileResult {
  id: number;
  mean: number;
  inside: number;
  edges: number;
}

export function grid(items: number): { cols: number; rows: number } {
  const aspect = (REGION.x1 - REGION.x0) / (REGION.y1 - REGION.y0);
  const cols = Math.max(2, Math.round(Math.sqrt(items * aspect)));
  return { cols, rows: Math.max(2, Math.round(items / cols)) };
}

function tileAt(id: number, cols: number, rows: number): Tile {
  const col = id % cols;
  const row = Math.floor(id / cols);
  const w = (REGION.x1 - REGION.x0) / cols;
  const h = (REGION.y1 - REGION.y0) / rows;
  return {
    id,
    col,
    row,
    ...TILE,
    x0: REGION.x0 + col * w,
    x1: REGION.x0 + (col + 1) * w,
    y0: REGION.y0 + row * h,
    y1: REGION.y0 + (row + 1) * h,
  };
}

export async function* tiles(ids: Iterable<number>, cols: number, rows: number, greedy: number | null) {
  let batch: SourceItem[] = [];
  for (const id of ids) {
    const tile = tileAt(id, cols, rows);
    if (id === greedy) tile.greedy = true;
    batch.push({ index: id, value: tile });
    if (batch.length === 256) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
