/** The demo's picture of the atlas: one colour per tile, from its result, drawn in character cells. */
import type { TileResult } from './demo-tiles.js';

// ── colours ─────────────────────────────────────────────────────────────────────────────────────

const STOPS: [number, number, number, number][] = [
  [0, 0, 7, 100],
  [0.16, 32, 107, 203],
  [0.42, 237, 255, 255],
  [0.64, 255, 170, 0],
  [0.86, 120, 20, 0],
  [1, 0, 0, 0],
];

function palette(t: number): [number, number, number] {
  const x = Math.max(0, Math.min(1, t));
  for (let i = 1; i < STOPS.length; i++) {
    const [p1, r1, g1, b1] = STOPS[i]!;
    const [p0, r0, g0, b0] = STOPS[i - 1]!;
    if (x <= p1) {
      const f = (x - p0) / (p1 - p0);
      return [r0 + (r1 - r0) * f, g0 + (g1 - g0) * f, b0 + (b1 - b0) * f];
    }
  }
  return [0, 0, 0];
}

export function tileColour(r: TileResult): [number, number, number] {
  // Mostly inside the set: black. Else the mean escape time, stretched so the boundary glows.
  if (r.inside > 0.9) return [0, 0, 0];
  return palette(r.mean ** 2.2 * 0.95);
}

const trueColour = /truecolor|24bit/i.test(process.env.COLORTERM ?? '');

function sgr(fg: [number, number, number] | null, bg: [number, number, number] | null): string {
  const code = (rgb: [number, number, number], base: 38 | 48): string => {
    if (trueColour) return `${base};2;${rgb.map((v) => Math.round(v)).join(';')}`;
    const c = rgb.map((v) => Math.round((v / 255) * 5));
    return `${base};5;${16 + 36 * c[0]! + 6 * c[1]! + c[2]!}`;
  };
  const parts = [fg ? code(fg, 38) : '39', bg ? code(bg, 48) : '49'];
  return `\x1b[${parts.join(';')}m`;
}

// ── the picture ─────────────────────────────────────────────────────────────────────────────────

const PENDING: [number, number, number] = [38, 38, 38];
export const FAILED: [number, number, number] = [255, 0, 60];

export class Canvas {
  private readonly colours: ([number, number, number] | null)[];
  readonly width: number;
  readonly height: number;

  constructor(
    private readonly cols: number,
    private readonly rows: number,
    maxWidth: number,
    maxHeight: number,
  ) {
    this.colours = new Array(cols * rows).fill(null);
    // One character cell shows two tiles, one above the other (▀ with a foreground and a background).
    this.width = Math.max(8, Math.min(cols, maxWidth));
    this.height = Math.max(4, Math.min(Math.ceil(rows / 2), maxHeight));
  }

  set(id: number, rgb: [number, number, number]): void {
    this.colours[id] = rgb;
  }

  private at(cx: number, sy: number): [number, number, number] | null {
    const col = Math.min(this.cols - 1, Math.floor((cx * this.cols) / this.width));
    const row = Math.min(this.rows - 1, Math.floor((sy * this.rows) / (this.height * 2)));
    return this.colours[row * this.cols + col] ?? null;
  }

  lines(): string[] {
    const out: string[] = [];
    for (let cy = 0; cy < this.height; cy++) {
      let line = '';
      let last = '';
      for (let cx = 0; cx < this.width; cx++) {
        const top = this.at(cx, 2 * cy) ?? PENDING;
        const bottom = this.at(cx, 2 * cy + 1) ?? PENDING;
        const s = sgr(top, bottom);
        if (s !== last) line += s;
        last = s;
        line += '▀';
      }
      out.push(`${line}\x1b[0m`);
    }
    return out;
  }
}
