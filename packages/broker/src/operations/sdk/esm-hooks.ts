/**
 * Node's module hooks (registered by ./provide through `module.register`, run on the loader thread):
 * an ES module's `import … from '@wanas/operations'` resolves to the broker's own SDK file.
 */

/** What ./provide passes: the SDK's specifier and the file URL it resolves to. */
interface SdkData {
  name: string;
  url: string;
}

let sdk: SdkData | undefined;

/** Called once by Node with the data given to `module.register`. */
export function initialize(data: SdkData): void {
  sdk = data;
}

type NextResolve = (specifier: string, context: unknown) => Promise<unknown>;

/** The SDK's specifier goes to the broker's copy; anything else resolves as it would. */
export async function resolve(specifier: string, context: unknown, next: NextResolve): Promise<unknown> {
  if (sdk && specifier === sdk.name) return { url: sdk.url, format: 'commonjs', shortCircuit: true };
  return next(specifier, context);
}
