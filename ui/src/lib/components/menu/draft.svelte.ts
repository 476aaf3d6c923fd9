// A row being edited: what is typed, and what the row said when editing began. An untouched
// draft follows the synced row (someone else's edit shows); a draft being edited keeps what
// is typed, and only the fields edited here are written (another's change to the rest stands).

export class Draft<T extends Record<string, string>> {
  d: T = $state() as T;
  base: string = $state('');

  constructor(init: T) {
    this.d = { ...init };
    this.base = JSON.stringify(init);
  }

  /** The row as synced now. */
  follow(next: T): void {
    const b = JSON.stringify(next);
    if (b !== this.base && JSON.stringify(this.d) === this.base) {
      this.d = { ...next };
      this.base = b;
    }
  }

  get dirty(): boolean {
    return JSON.stringify(this.d) !== this.base;
  }

  /** The fields typed differently from the base. */
  changed(): Set<keyof T> {
    const base = JSON.parse(this.base) as T;
    return new Set(Object.keys(this.d).filter((k) => this.d[k] !== base[k]) as (keyof T)[]);
  }

  /** What was typed is now the row: the draft follows it again. */
  commit(): void {
    this.base = JSON.stringify(this.d);
  }

  reset(next: T): void {
    this.d = { ...next };
    this.base = JSON.stringify(next);
  }
}
