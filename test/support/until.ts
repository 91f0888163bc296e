/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 50 ms until it holds (at most `limitMs`); throws with `what` otherwise. */
export async function until(what: string, cond: () => Promise<boolean>, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${limitMs} ms`);
    await sleep(50);
  }
}

/** What a broker's GetStatus says of one target: enough to see why it is (not) down. */
interface TargetView {
  targets: { site: string; pod: string; state: string; reason: string }[];
  channels: { site: string; pod: string; brokerId: string; state: string; stateReason: string }[];
}

/**
 * Waits until `status()` reports the remote site `site` down (noticed within ~2 s on this machine, the
 * failure-path goal; a cold CI machine once took over 10 s, so the limit is generous). On timeout, the
 * error says what the broker last saw of the site's target and endpoints.
 */
export async function untilSiteDown(
  status: () => Promise<TargetView>,
  site: string,
  limitMs = 20_000,
): Promise<void> {
  let seen = '';
  await until(
    `entry sees ${site} down`,
    async () => {
      const st = await status();
      const target = st.targets.find((t) => t.site === site && !t.pod);
      seen = `target ${target?.state} (${target?.reason}); endpoints ${st.channels
        .filter((c) => c.site === site)
        .map((c) => `${c.brokerId}:${c.state}(${c.stateReason})`)
        .join(' ')}`;
      return target?.state === 'down';
    },
    limitMs,
  ).catch((e: Error) => {
    throw new Error(`${e.message}; last seen: ${seen}`);
  });
}
