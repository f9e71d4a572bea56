// The ids of the last N notifications delivered: a repeat (a re-send, a replay after a reconnect)
// is acknowledged but not shown twice. Bounded: the oldest id is forgotten first.

export class IdMemory {
  readonly #ids = new Set<string>();

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be a positive integer");
  }

  /** Remembers `id`; `false` when it was already remembered. */
  remember(id: string): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    if (this.#ids.size > this.capacity) {
      // A Set iterates in insertion order: the first is the oldest.
      const oldest = this.#ids.values().next().value as string;
      this.#ids.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.#ids.size;
  }
}
