/**
 * Loads a development package (`@wanas/devfed`, `@wanas/bench`, `@wanas/k8s`) for the command that needs it.
 * They are not part of the broker image, which holds the broker and the client only: there the command
 * says so and exits 2.
 */
export async function loadDevPackage<T>(name: string, command: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (e) {
    if ((e as { code?: string }).code !== 'MODULE_NOT_FOUND') throw e;
    process.stderr.write(
      `error: "wanas ${command}" needs ${name}, which this install does not have (the broker image holds the broker and the client only); run it from a checkout of the repository\n`,
    );
    process.exit(2);
  }
}
