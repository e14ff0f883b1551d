/**
 * JSON printed the way Google's web services print it: three-space
 * indentation and `" : "` between a key and its value.
 */

function _print(value: unknown, indent: string, out: string[]): void {
  if (Array.isArray(value)) {
    if (value.length === 0) {
      out.push("[]");
      return;
    }
    const inner = indent + "   ";
    out.push("[\n");
    value.forEach((item, index) => {
      out.push(inner);
      _print(item, inner, out);
      out.push(index < value.length - 1 ? ",\n" : "\n");
    });
    out.push(indent, "]");
    return;
  }
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) {
      out.push("{}");
      return;
    }
    const inner = indent + "   ";
    out.push("{\n");
    entries.forEach(([key, item], index) => {
      out.push(inner, JSON.stringify(key), " : ");
      _print(item, inner, out);
      out.push(index < entries.length - 1 ? ",\n" : "\n");
    });
    out.push(indent, "}");
    return;
  }
  out.push(JSON.stringify(value) ?? "null");
}

/** Prints `value` as Google-style JSON. */
export function formatGoogleJson(value: unknown): string {
  const out: string[] = [];
  _print(value, "", out);
  return out.join("");
}

/** Where the top-level `results` array sits in printed JSON, in UTF-16 offsets. */
export interface ResultsLayout {
  /** Offset of the array's `[`. */
  open: number;
  /** Offset just past the array's `]`. */
  close: number;
  /** Offset just past each result (before its `,` or the newline that follows the last). */
  ends: number[];
}

/**
 * Prints an answer object as {@linkcode formatGoogleJson} does, and says where
 * its top-level `results` array and each result end, so the JSON of the
 * answer cut to fewer results can be cut out of this one text. Undefined
 * layout when there is no non-empty `results` array.
 */
export function formatGoogleJsonWithLayout(answer: Record<string, unknown>): {
  json: string;
  layout: ResultsLayout | undefined;
} {
  const results = answer.results;
  if (!Array.isArray(results) || results.length === 0) return { json: formatGoogleJson(answer), layout: undefined };
  const entries = Object.entries(answer).filter(([, v]) => v !== undefined);
  const out: string[] = ["{\n"];
  let length = 2;
  const push = (text: string) => {
    out.push(text);
    length += text.length;
  };
  let layout: ResultsLayout | undefined;
  entries.forEach(([key, item], index) => {
    push(`   ${JSON.stringify(key)} : `);
    if (key !== "results") {
      const piece: string[] = [];
      _print(item, "   ", piece);
      push(piece.join(""));
    } else {
      const open = length;
      const ends: number[] = [];
      push("[\n");
      results.forEach((result, i) => {
        const piece: string[] = [];
        _print(result, "      ", piece);
        push("      " + piece.join(""));
        ends.push(length);
        push(i < results.length - 1 ? ",\n" : "\n");
      });
      push("   ]");
      layout = { open, close: length, ends };
    }
    push(index < entries.length - 1 ? ",\n" : "\n");
  });
  push("}");
  return { json: out.join(""), layout };
}

/**
 * The part of a WHATSAT reply after the AT line: a newline, the JSON; then
 * runs of newlines squeezed to one, trailing newlines removed, two newlines
 * added. The AT line holds no newline, so the reply is the line followed by
 * this, and the body of a cached answer can be made once and reused.
 */
export function whatsatBody(json: string): string {
  return `\n${json}`.replace(/\n{2,}/g, "\n").replace(/\n+$/, "") + "\n\n";
}
