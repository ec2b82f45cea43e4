// @dsherret/to-absolute-glob ships no types.
declare module '@dsherret/to-absolute-glob' {
  export interface ToAbsoluteGlobOptions {
    /** Relative globs are joined to this directory (default process.cwd()). */
    cwd?: string;
    /** Globs starting with '/' are joined to this directory instead of the filesystem root. */
    root?: string;
  }
  export default function toAbsoluteGlob(glob: string, options?: ToAbsoluteGlobOptions): string;
}
