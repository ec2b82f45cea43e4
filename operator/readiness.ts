// When the operator is ready: a standby replica once the API server answers its lease requests
// (it can take over), the leader once its caches have synced and the API server still answers.
// An operator that cannot reach the API server is not ready, so a rollout waits for it.
import type { LeaderElector } from './leader-election.js';

export interface ReadinessInputs {
  controller: { readonly synced: boolean };
  elector: Pick<LeaderElector, 'lastApiAnswer' | 'isLeader'> | undefined;
  now: () => number;
  apiAnswerMaxAgeMs: number;
}

export function operatorReadiness(inputs: ReadinessInputs): () => string | undefined {
  return () => {
    const { controller, elector, now, apiAnswerMaxAgeMs } = inputs;
    if (elector) {
      if (elector.lastApiAnswer === 0) return 'the API server has not answered a leader lease request yet';
      const age = now() - elector.lastApiAnswer;
      if (age > apiAnswerMaxAgeMs) return `the API server has not answered a leader lease request for ${Math.round(age / 1000)} s`;
      if (!elector.isLeader) return undefined;
    }
    return controller.synced ? undefined : 'waiting for the VMSnapshot, VMRestore, VMSnapshotClass and VMInventory caches to sync';
  };
}
