/**
 * A failing disk: the server's data directory on a small tmpfs that the
 * test fills up (as root; otherwise the test says it was skipped and why).
 * Until the disk fills, IAMATs are acknowledged as usual; after, no IAMAT
 * gets an AT reply for a record not on disk (its connection is closed),
 * WHATSAT is still answered and the server does not crash; once space is
 * freed, IAMATs are acknowledged again without a restart; and after
 * `kill -9` and a restart every acknowledged record is there.
 */

import assert from "node:assert/strict";
import { makePrivateDirectory, pathExists } from "../lib/private_files.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { waitFor } from "./testing/wait.ts";

/** Why the test cannot run here, or undefined when it can. */
async function whyNotHere(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-disk-probe-" });
  try {
    const mounted = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir] }).output();
    if (!mounted.success) {
      return `mounting a tmpfs failed (it needs root): ${new TextDecoder().decode(mounted.stderr).trim()}`;
    }
    await new Deno.Command("umount", { args: [dir] }).output();
    return undefined;
  } catch (error) {
    return `mount cannot be run: ${(error as Error).message}`;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const PERMISSIONS: Deno.PermissionOptionsObject = { ...HERD_TEST_PERMISSIONS, run: ["deno", "mount", "umount"] };
const skipped = await whyNotHere();
if (skipped !== undefined) console.log(`disk_test.ts: skipped: ${skipped}`);

/**
 * A herd of one server, "Solo" (offline Places, an admin port), whose data directory is a tmpfs of `size`, for `fn`;
 * the server killed and the tmpfs unmounted after it, however it ends.
 */
async function withSoloOnTmpfs(size: string, fn: (herd: TestHerd, data: string) => Promise<void>): Promise<void> {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["Solo"],
    links: [],
    places: { provider: "offline" },
    admin: true,
  });
  const data = `${herd.dir}/data`;
  await Deno.mkdir(data);
  const mounted = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", data] })
    .output();
  assert.ok(mounted.success, new TextDecoder().decode(mounted.stderr));
  try {
    await fn(herd, data);
  } finally {
    await herd.stop("Solo", "SIGKILL").catch(() => {});
    await new Deno.Command("umount", { args: [data] }).output();
  }
}

Deno.test({
  name: "a data directory made on a full disk, whose .gitignore cannot be written, is taken back and made whole later",
  permissions: PERMISSIONS,
  ignore: skipped !== undefined,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-disk-dir-" });
  const mounted = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir] }).output();
  assert.ok(mounted.success, new TextDecoder().decode(mounted.stderr));
  try {
    await fillDisk(`${dir}/filler`);
    // An operator audit's first start on a full disk: the directory was made, its .gitignore left empty for good.
    assert.throws(
      () => makePrivateDirectory(`${dir}/data`),
      new RegExp(`^Error: the directory ${dir}/data was made, but its \\.gitignore cannot be written \\(`),
    );
    assert.equal(pathExists(`${dir}/data`), false, "taken back, so the next start makes it again");
    await Deno.remove(`${dir}/filler`);
    assert.equal(makePrivateDirectory(`${dir}/data`), undefined);
    assert.match(await Deno.readTextFile(`${dir}/data/.gitignore`), /^\*$/m);
    assert.deepEqual([...Deno.readDirSync(`${dir}/data`)].map((entry) => entry.name), [".gitignore"]);
  } finally {
    await new Deno.Command("umount", { args: [dir] }).output();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Writes `filler` until the disk says it is full. */
async function fillDisk(filler: string): Promise<void> {
  using file = await Deno.open(filler, { write: true, create: true });
  const chunk = new Uint8Array(64 * 1024).fill(120);
  try {
    while (true) await file.write(chunk);
  } catch (error) {
    assert.match((error as Error).message, /No space left on device|os error 28/);
  }
}

Deno.test({
  name: `a full disk: no IAMAT is acknowledged that is not on disk, WHATSAT still answers, and writing resumes once ` +
    `space is freed${skipped === undefined ? "" : ` (skipped: ${skipped})`}`,
  ignore: skipped !== undefined,
  permissions: PERMISSIONS,
}, async () => {
  await withSoloOnTmpfs("2m", async (herd, data) => {
    await herd.start("Solo");
    const port = herd.port("Solo");
    const acknowledged = new Map<string, string>();
    let time = 1_700_000_000;
    const iamat = async (id: string) => {
      const line = `IAMAT ${id} +34.068930-118.445127 ${++time}`;
      const reply = await exchange(port, `${line}\n`);
      if (reply.startsWith("AT Solo ")) acknowledged.set(id, reply.trimEnd());
      return reply;
    };
    for (let i = 0; i < 20; i++) assert.match(await iamat(`before-${i}`), /^AT Solo /);
    assert.deepEqual(await herd.admin("Solo", "/healthz"), { status: 200, body: "ok\n" });
    await fillDisk(`${data}/filler`);
    // Long IDs fill the WAL's pages fast: sooner or later a commit needs room the disk does not have.
    const pad = "p".repeat(200);
    let refusedAt: number | undefined;
    for (let i = 0; i < 5000 && refusedAt === undefined; i++) {
      if ((await iamat(`full-${i}-${pad}`)) === "") refusedAt = i;
    }
    assert.ok(refusedAt !== undefined, "a commit failed once the disk was full");
    // Refused the same way, every one, while the disk stays full: no reply, the connection closed.
    for (let i = 0; i < 5; i++) assert.equal(await iamat(`while-full-${i}`), "", "no AT reply while commits fail");
    // The health endpoint says so, for a supervisor or a load balancer.
    const health = await herd.admin("Solo", "/healthz");
    assert.equal(health.status, 503);
    assert.match(health.body, /cannot commit records to disk/);
    // WHATSAT still answers, with what was acknowledged.
    const whatsat = await exchange(port, "WHATSAT before-3 10 1\n");
    assert.equal(whatsat.split("\n")[0], acknowledged.get("before-3"));
    assert.match(whatsat, /"status" : "(OK|ZERO_RESULTS)"/);
    await waitFor(
      async () => /failed: .*no IAMAT is acknowledged until a commit succeeds again/.test(await herd.log("Solo")),
      {
        what: "the failure in the log",
      },
    );
    // Space again: IAMATs are acknowledged again, without a restart.
    await Deno.remove(`${data}/filler`);
    await waitFor(async () => (await iamat(`after-${time}`)).startsWith("AT Solo "), {
      timeoutMs: 15_000,
      stepMs: 200,
      what: "IAMATs to be acknowledged again",
    });
    await waitFor(async () => /succeeds again after \d+ failed commits/.test(await herd.log("Solo")), {
      what: "the recovery in the log",
    });
    assert.deepEqual(await herd.admin("Solo", "/healthz"), { status: 200, body: "ok\n" });
    // kill -9 and a restart: every acknowledged record is there.
    await herd.stop("Solo", "SIGKILL");
    await herd.start("Solo");
    for (const [id, line] of acknowledged) {
      const reply = (await exchange(port, `WHATSAT ${id} 10 0\n`)).split("\n")[0];
      assert.equal(reply, line, `${id} was acknowledged, so it survived`);
    }
    assert.ok(acknowledged.size > 20, `${acknowledged.size} acknowledged records checked`);
  });
});

Deno.test({
  name: `a backup that would leave less free space than the database's size (64 MiB at least) is refused with 507, ` +
    `and the server goes on committing${skipped === undefined ? "" : ` (skipped: ${skipped})`}`,
  ignore: skipped !== undefined,
  permissions: PERMISSIONS,
}, async () => {
  await withSoloOnTmpfs("80m", async (herd, data) => {
    await herd.start("Solo");
    const port = herd.port("Solo");
    assert.match(await exchange(port, "IAMAT one +1+1 1700000000\n"), /^AT Solo /);
    const backup = async () => {
      const response = await fetch(`http://127.0.0.1:${herd.adminPort("Solo")}/backup`, { method: "POST" });
      return { status: response.status, body: await response.json() };
    };
    // 80 MiB free: a copy of a few pages leaves more than 64 MiB.
    const taken = await backup();
    assert.equal(taken.status, 200, JSON.stringify(taken.body));
    // 20 MiB of something else: the next copy would leave less than 64 MiB.
    await Deno.writeFile(`${data}/other`, new Uint8Array(20 * 1024 * 1024));
    const refused = await backup();
    assert.equal(refused.status, 507);
    assert.match(
      refused.body.error,
      /^not enough free space in .*\/data\/backups: \d+ bytes free, the copy takes about/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(`${data}/backups`)].map((entry) => entry.name).sort(),
      [".gitignore", taken.body.path.slice(taken.body.path.lastIndexOf("/") + 1)],
    );
    assert.match(await exchange(port, "IAMAT two +1+1 1700000001\n"), /^AT Solo /);
    assert.deepEqual(await herd.admin("Solo", "/healthz"), { status: 200, body: "ok\n" });
  });
});
