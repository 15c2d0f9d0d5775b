// SPDX-License-Identifier: GPL-2.0-only
/*
 * The chart: ops/s per workload as grouped bars on a log scale, one panel per
 * key count; in each group sixtree's series, then the peers, then the device
 * limit (lookup workloads only). Hand-written SVG, no dependency.
 *
 * Every series keeps one slot and one colour across all groups, so a missing
 * bar (store skipped, job failed) is a visible gap, not a shifted neighbour.
 * Bars carry a <title> with the exact number; rows with notes (regime not
 * reached, keys ran out, verify failed) get a '!' above the bar.
 */

import type { Report, Row } from './report.js';
import { busyNote, formatRate } from './report.js';
import { workloadNames } from './workloads.js';

const sixtreeColours = ['#1f4e99', '#6d9eeb', '#0b7a75', '#5cc4bb', '#5b3f99', '#a58fe0', '#2d6a1f', '#7fbf6a', '#1b6ca8', '#9cc9ee', '#3d5a80', '#98c1d9'];
const peerColours: Record<string, string> = { lmdb: '#e6812e', 'classic-level': '#c23b3b', sqlite: '#8c564b' };
const deviceColours = ['#7f7f7f', '#a6a6a6', '#595959', '#c7c7c7', '#404040', '#d9d9d9'];

const barWidth = 11;
const groupGap = 18;
const plotHeight = 300;
const marginLeft = 70;
const marginRight = 20;
const panelTop = 40;
const labelSpace = 110;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function seriesOrder(rows: readonly Row[]): string[] {
  const rank = (r: Row) => (r.store === 'sixtree' ? 0 : r.store === 'device' ? 2 : 1);
  const seen = new Map<string, Row>();
  for (const r of rows) if (!seen.has(r.series)) seen.set(r.series, r);
  const peerRank = ['lmdb', 'classic-level', 'sqlite'];
  return [...seen.values()]
    .sort((a, b) => rank(a) - rank(b) || peerRank.indexOf(a.store) - peerRank.indexOf(b.store) || a.series.localeCompare(b.series))
    .map((r) => r.series);
}

function colourMap(rows: readonly Row[], series: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  let s = 0;
  let d = 0;
  for (const name of series) {
    const row = rows.find((r) => r.series === name)!;
    if (row.store === 'sixtree') m.set(name, sixtreeColours[s++ % sixtreeColours.length]!);
    else if (row.store === 'device') m.set(name, deviceColours[d++ % deviceColours.length]!);
    else m.set(name, peerColours[row.store] ?? '#333333');
  }
  return m;
}

function tickLabel(v: number): string {
  return v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : `${v}`;
}

export function renderSvg(report: Report): string {
  const rows = report.rows.filter((r) => Number.isFinite(r.opsPerSec) && r.opsPerSec > 0);
  const series = seriesOrder(rows);
  const colours = colourMap(rows, series);
  const keyCounts = [...new Set(rows.map((r) => r.keyCount))].sort((a, b) => a - b);
  const workloadsShown = workloadNames.filter((w) => rows.some((r) => r.workload === w));
  const groupWidth = Math.max(1, series.length) * barWidth + groupGap;
  const plotWidth = Math.max(1, workloadsShown.length) * groupWidth;
  const legendColumns = 4;
  const legendColumnWidth = 200;
  const width = Math.max(marginLeft + plotWidth + marginRight, marginLeft + legendColumns * legendColumnWidth);
  const legendRows = Math.ceil(series.length / legendColumns);
  const legendHeight = 18 * legendRows + 10;
  const panelHeight = panelTop + plotHeight + labelSpace;
  const headerHeight = 46 + legendHeight;
  const height = headerHeight + panelHeight * Math.max(1, keyCounts.length) + 30;

  const lo = rows.length ? Math.min(...rows.map((r) => r.opsPerSec)) : 1;
  const hi = rows.length ? Math.max(...rows.map((r) => r.opsPerSec)) : 10;
  const decadeLo = Math.floor(Math.log10(lo));
  const decadeHi = Math.max(decadeLo + 1, Math.ceil(Math.log10(hi)));
  const y = (v: number) => plotHeight - ((Math.log10(v) - decadeLo) / (decadeHi - decadeLo)) * plotHeight;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  const m = report.meta.machine;
  out.push(`<text x="${marginLeft}" y="20" font-size="15" font-weight="bold">sixtree bench: ops/s per workload (log scale; higher is better)</text>`);
  const note = busyNote(report.meta);
  const busy = note ? ` · ${note.replace('busy machine', 'BUSY MACHINE')}` : '';
  out.push(`<text x="${marginLeft}" y="36" fill="#555">${esc(`${report.meta.startedAt} · ${m.cpuCount} x ${m.cpuModel} · Node ${m.node} · ${report.meta.target}${busy}`)}</text>`);

  series.forEach((name, i) => {
    const lx = marginLeft + (i % legendColumns) * legendColumnWidth;
    const ly = 50 + Math.floor(i / legendColumns) * 18;
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${colours.get(name)}"/>`);
    out.push(`<text x="${lx + 17}" y="${ly + 10}">${esc(name)}</text>`);
  });

  keyCounts.forEach((keyCount, p) => {
    const top = headerHeight + p * panelHeight + panelTop;
    out.push(`<g transform="translate(${marginLeft},${top})">`);
    out.push(`<text x="0" y="-12" font-size="13" font-weight="bold">${keyCount.toLocaleString('en-US')} keys</text>`);
    for (let d = decadeLo; d <= decadeHi; d++) {
      const v = 10 ** d;
      const yy = y(v).toFixed(1);
      out.push(`<line x1="0" x2="${plotWidth}" y1="${yy}" y2="${yy}" stroke="#dddddd"/>`);
      out.push(`<text x="-6" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#444">${tickLabel(v)}</text>`);
    }
    out.push(`<text transform="translate(-52,${plotHeight / 2}) rotate(-90)" text-anchor="middle" fill="#444">ops/s</text>`);
    out.push(`<line x1="0" x2="0" y1="0" y2="${plotHeight}" stroke="#888"/>`);
    out.push(`<line x1="0" x2="${plotWidth}" y1="${plotHeight}" y2="${plotHeight}" stroke="#888"/>`);

    workloadsShown.forEach((w, g) => {
      const gx = g * groupWidth + groupGap / 2;
      series.forEach((name, s) => {
        const row = rows.find((r) => r.keyCount === keyCount && r.workload === w && r.series === name);
        if (!row) return;
        const x = gx + s * barWidth;
        const yy = y(row.opsPerSec);
        const h = plotHeight - yy;
        const note = row.notes.length ? ` (${row.notes.join('; ')})` : '';
        out.push(
          `<rect x="${x.toFixed(1)}" y="${yy.toFixed(1)}" width="${barWidth - 1}" height="${Math.max(0, h).toFixed(1)}" fill="${colours.get(name)}"><title>${esc(`${w} · ${name}: ${formatRate(row.opsPerSec)} ops/s${note}`)}</title></rect>`,
        );
        if (row.notes.length) out.push(`<text x="${(x + barWidth / 2).toFixed(1)}" y="${(yy - 3).toFixed(1)}" text-anchor="middle" font-weight="bold" fill="#c00">!</text>`);
      });
      const lx = gx + (series.length * barWidth) / 2;
      out.push(`<text transform="translate(${lx.toFixed(1)},${plotHeight + 12}) rotate(-40)" text-anchor="end" fill="#222">${esc(w)}</text>`);
    });
    out.push('</g>');
  });

  const deviceNote = rows.some((r) => r.store === 'device') ? " Device bars: node-sized O_DIRECT random reads at the workload's queue depth." : '';
  out.push(`<text x="${marginLeft}" y="${height - 24}" fill="#555">${esc(`Every write is a durable commit (docs/benchmarks.md). ! = qualified result (hover for the note).${deviceNote}`)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
