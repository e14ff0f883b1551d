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

/**
 * The part of a WHATSAT reply after the AT line: a newline, the JSON; then
 * runs of newlines squeezed to one, trailing newlines removed, two newlines
 * added. The AT line holds no newline, so the reply is the line followed by
 * this, and the body of a cached answer can be made once and reused.
 */
export function whatsatBody(json: string): string {
  return `\n${json}`.replace(/\n{2,}/g, "\n").replace(/\n+$/, "") + "\n\n";
}
