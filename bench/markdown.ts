// SPDX-License-Identifier: GPL-2.0-only
/*
 * `node dist/bench/markdown.js bench/results/<run>.json`: print a run's rows
 * as a Markdown table (report.ts formatMarkdown), with the line naming the
 * run, for docs/benchmarks.md and the README. Docs quote runs this way
 * instead of copying the text table by hand.
 */

import { readFileSync } from 'node:fs';
import type { Report } from './report.js';
import { formatMarkdown } from './report.js';

const file = process.argv[2];
if (!file || file === '--help') {
  console.error('usage: node dist/bench/markdown.js bench/results/<run>.json');
  process.exit(file ? 0 : 2);
}
const report = JSON.parse(readFileSync(file, 'utf8')) as Report;
const m = report.meta;
const at = m.git ? ` at \`${m.git.commit.slice(0, 7)}\`${m.git.dirty ? ' (uncommitted changes)' : ''}` : '';
console.log(`Run ${m.startedAt}${at}, ${(m.durationMs / 1000).toFixed(0)} s, ${m.machine.cpuCount} x ${m.machine.cpuModel}, Node ${m.machine.node}${m.otherCpuShare !== undefined ? `, other processes used ${(m.otherCpuShare * 100).toFixed(0)}% CPU` : ''}${m.stealCpuShare !== undefined ? `, hypervisor steal ${(m.stealCpuShare * 100).toFixed(0)}%` : ''}:`);
console.log('');
console.log(formatMarkdown(report));
