// SPDX-License-Identifier: GPL-2.0-only
/*
 * crc32c for format code: the native implementation from src/native
 * (SSE4.2 when the CPU has it, a table otherwise). Seeded for chaining.
 */
export { crc32c } from '../native/index.js';
