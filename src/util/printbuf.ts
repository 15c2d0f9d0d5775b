/*
 * Printbuf: the text builder every toText() printer uses (bcachefs printbuf).
 * Indentation is a level, applied at the start of each new line; tabstops are
 * not needed here: printers align with padEnd where they want columns.
 */

export class Printbuf {
  private parts: string[] = [];
  private indentLevel = 0;
  private atLineStart = true;

  /** Append text; embedded newlines start new indented lines. */
  print(s: string): this {
    const lines = s.split('\n');
    lines.forEach((line, i) => {
      if (i > 0) this.newline();
      if (line.length === 0) return;
      if (this.atLineStart) {
        this.parts.push('  '.repeat(this.indentLevel));
        this.atLineStart = false;
      }
      this.parts.push(line);
    });
    return this;
  }

  /** Append a line. */
  line(s = ''): this {
    this.print(s);
    return this.newline();
  }

  newline(): this {
    this.parts.push('\n');
    this.atLineStart = true;
    return this;
  }

  /** `label: value` on its own line, labels padded to a column. */
  field(label: string, value: unknown, width = 24): this {
    return this.line(`${(label + ':').padEnd(width)}${String(value)}`);
  }

  indent(): this {
    this.indentLevel++;
    return this;
  }

  outdent(): this {
    if (this.indentLevel > 0) this.indentLevel--;
    return this;
  }

  /** Run fn one indentation level deeper. */
  nested(fn: (out: Printbuf) => void): this {
    this.indent();
    fn(this);
    return this.outdent();
  }

  toString(): string {
    return this.parts.join('');
  }
}

/** Human-readable byte count: 1536 -> "1.5 KiB". */
export function bytesToText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`;
}
