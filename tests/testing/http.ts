/** HTTP requests the way a browser's page could make them, for the Host checks of the dashboard and admin endpoint. */

/** A GET with a Host header of our choosing, over a raw socket (fetch sets Host itself): the whole answer. */
export async function rawGet(port: number, path: string, host: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
  let text = "";
  const buffer = new Uint8Array(65536);
  for (let n; (n = await conn.read(buffer)) !== null;) text += new TextDecoder().decode(buffer.subarray(0, n));
  return text;
}
