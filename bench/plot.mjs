/**
 * `npm run bench -- --plot [FILE]`: the standings as one SVG (default docs/bench.svg), a panel per
 * workload, a bar per runner showing its ratio to the workload's baseline (the number each table's
 * last column gives). Bars are scaled so that "better" is always longer: for rates (items/s) the
 * ratio itself, for times (ms) its inverse. corral's bars are dark, the peers' light.
 */
const W = 860;
const BAR = 16;
const GAP = 5;
const LABEL = 330;
const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

export function plot(results, machine) {
  let y = 48;
  const parts = [];
  for (const w of results) {
    const rows = w.rows.filter((r) => r.ratio !== undefined && Number.isFinite(r.ratio));
    if (rows.length === 0) continue;
    const faster = w.unit !== 'ms'; // a rate: higher is better
    const goodness = (r) => (faster ? r.ratio : 1 / r.ratio);
    const top = Math.max(...rows.map(goodness), 1);
    parts.push(`<text x="10" y="${y}" font-weight="bold">${esc(`${w.index}. ${w.title}`)}</text>`);
    parts.push(
      `<text x="10" y="${y + 15}" fill="#555" font-size="11">${esc(`bar: ${faster ? 'ratio' : '1 / ratio'} vs ${w.baseline} (longer is better)`)}</text>`,
    );
    y += 26;
    for (const r of rows) {
      const len = Math.max(1, ((W - LABEL - 90) * goodness(r)) / top);
      const ours = r.runner.startsWith('corral');
      parts.push(
        `<text x="10" y="${y + BAR - 4}" font-size="12">${esc(r.runner.length > 52 ? `${r.runner.slice(0, 51)}…` : r.runner)}</text>`,
        `<rect x="${LABEL}" y="${y}" width="${len.toFixed(1)}" height="${BAR}" fill="${ours ? '#1f5fa8' : '#a9c4e4'}"/>`,
        `<text x="${(LABEL + len + 6).toFixed(1)}" y="${y + BAR - 4}" font-size="12">${r.ratio.toFixed(2)}×</text>`,
      );
      y += BAR + GAP;
    }
    y += 18;
  }
  const head = `corral vs peers, ${machine.cpu}, ${machine.nproc} cores, Node ${machine.node.replace(/^v/, '')}, load ${machine.loadavg.join(' ')}`;
  // A title (and role) so that a screen reader has a name for the chart, as the linter asks of SVGs.
  return `<svg xmlns="http://www.w3.org/2000/svg" role="img" width="${W}" height="${y}" font-family="sans-serif" font-size="13">
<title>${esc(head)}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="15" font-weight="bold">${esc(head)}</text>
${parts.join('\n')}
</svg>
`;
}
