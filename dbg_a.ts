import { exchange, TestHerd } from "/work/main/tests/testing/herd.ts";
import { PeerTransport } from "/work/main/lib/peer/transport.ts";
import { LineSocket } from "/work/main/lib/net/line_socket.ts";
const herd = await TestHerd.create({
  placesUrl: "http://127.0.0.1:9/x",
  names: ["A", "B", "C", "D"],
  links: [["A", "B"], ["B", "C"], ["B", "D"]],
  places: { provider: "offline" },
});
await herd.startAll();
await herd.stop("B", "SIGKILL");
const impostor = new PeerTransport({ files: herd.tlsFiles("D"), handshakeTimeoutMs: 5000 });
impostor.load();
const server = await impostor.listen({
  host: "127.0.0.1",
  port: herd.peerPort("B"),
  onPeer: ({ socket }) => {
    console.log("impostor got a peer");
    new LineSocket(socket, { maxLineBytes: 1000, onLines: (l) => console.log("heard", l.length) });
  },
  onRefused: (a, r) => console.log("impostor refused", a, r),
});
await new Promise((r) => setTimeout(r, 3000));
console.log((await herd.log("A")).split("\n").filter((l) => /B/.test(l)).slice(-6).join("\n"));
server.close();
Deno.exit(0);
