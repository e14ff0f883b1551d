/**
 * KDBush's `finish()` in slices. `finish()` kd-sorts the index's arrays in
 * one go: for the 135k cities of the offline index, one turn of 43-60 ms
 * (the select and swaps of kdbush 4.1.0) after a starting server listened,
 * its longest (CPU profiles of a server restarted into a running herd).
 * {@linkcode kdSortInSlices} does the same sort, node by node, and pauses
 * between nodes.
 *
 * The sort is kdbush's own (its `sort` and Floyd-Rivest `select`, written
 * again here since the package does not export them), step for step, so the
 * arrays end byte for byte as `finish()` leaves them (tests/kd_sort_test.ts
 * compares the two); only the order in which the disjoint halves are sorted
 * differs, which changes nothing. The sorted buffer then becomes a finished
 * index through `KDBush.from()`, the package's public way to read one.
 *
 * @module
 */

/**
 * Kd-sorts the arrays of a KDBush whose items are all added (its `ids`,
 * `coords` of the default `Float64Array` type, x and y of each item in
 * turn, and `nodeSize`) a node at a time, pausing (a `yield`) once a
 * node's select brings the items visited since the last pause to
 * `workPerTurn` or more. `KDBush.from(index.data)` then reads the sorted
 * buffer as a finished index.
 */
export function* kdSortInSlices(
  ids: Uint16Array | Uint32Array,
  coords: Float64Array,
  nodeSize: number,
  workPerTurn: number,
): Generator<void, void> {
  // Nodes still to sort: left, right, axis, three numbers each (a tree of depth 32 at most leaves few).
  const pending: number[] = [0, ids.length - 1, 0];
  let work = 0;
  while (pending.length > 0) {
    const axis = pending.pop()!;
    const right = pending.pop()!;
    const left = pending.pop()!;
    if (right - left <= nodeSize) continue;
    const middle = (left + right) >> 1;
    _select(ids, coords, middle, left, right, axis);
    pending.push(left, middle - 1, 1 - axis, middle + 1, right, 1 - axis);
    work += right - left + 1;
    if (work >= workPerTurn) {
      work = 0;
      yield;
    }
  }
}

/**
 * Floyd and Rivest's selection, as kdbush 4.1.0 does it: reorders items
 * `left..right` so that item `k` is where a sort on `axis` would put it,
 * with no item before it greater and none after it smaller on that axis.
 */
function _select(
  ids: Uint16Array | Uint32Array,
  coords: Float64Array,
  k: number,
  left: number,
  right: number,
  axis: number,
): void {
  while (right > left) {
    if (right - left > 600) {
      const n = right - left + 1;
      const m = k - left + 1;
      const z = Math.log(n);
      const s = 0.5 * Math.exp(2 * z / 3);
      const sd = 0.5 * Math.sqrt(z * s * (n - s) / n) * (m - n / 2 < 0 ? -1 : 1);
      const newLeft = Math.max(left, Math.floor(k - m * s / n + sd));
      const newRight = Math.min(right, Math.floor(k + (n - m) * s / n + sd));
      _select(ids, coords, k, newLeft, newRight, axis);
    }
    const t = coords[2 * k + axis];
    let i = left;
    let j = right;
    _swapItem(ids, coords, left, k);
    if (coords[2 * right + axis] > t) _swapItem(ids, coords, left, right);
    while (i < j) {
      _swapItem(ids, coords, i, j);
      i++;
      j--;
      while (coords[2 * i + axis] < t) i++;
      while (coords[2 * j + axis] > t) j--;
    }
    if (coords[2 * left + axis] === t) _swapItem(ids, coords, left, j);
    else {
      j++;
      _swapItem(ids, coords, j, right);
    }
    if (j <= k) left = j + 1;
    if (k <= j) right = j - 1;
  }
}

function _swapItem(ids: Uint16Array | Uint32Array, coords: Float64Array, i: number, j: number): void {
  const id = ids[i];
  ids[i] = ids[j];
  ids[j] = id;
  const x = coords[2 * i];
  coords[2 * i] = coords[2 * j];
  coords[2 * j] = x;
  const y = coords[2 * i + 1];
  coords[2 * i + 1] = coords[2 * j + 1];
  coords[2 * j + 1] = y;
}
