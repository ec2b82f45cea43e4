// Every file generated from the schemas in api/, by path relative to the repository root.
// The chart keeps its own copies of the CRDs (Helm installs a chart's crds/ directory), so both
// are written from the same source and a unit test fails if either drifts.
import { chartValuesJsonSchema } from './chart-values.js';
import { crdFiles } from './crd.js';
import { referenceMarkdown } from './reference.js';

export const CRD_DIR = 'crds';
export const CHART_DIR = 'helm/vmsnap';

export interface GeneratedFile {
  path: string;
  content: string;
}

export function generatedFiles(): GeneratedFile[] {
  const crds = crdFiles();
  return [
    ...crds.map((f) => ({ path: `${CRD_DIR}/${f.name}`, content: f.content })),
    ...crds.map((f) => ({ path: `${CHART_DIR}/crds/${f.name}`, content: f.content })),
    { path: `${CHART_DIR}/values.schema.json`, content: `${JSON.stringify(chartValuesJsonSchema(), null, 2)}\n` },
    { path: 'docs/reference.md', content: referenceMarkdown() },
  ];
}
