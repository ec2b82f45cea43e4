# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build -t vmsnap:0.1.0 .                  the operator and node agent (the Helm chart picks
#                                                    the entry point); same as --target runtime
#   docker build --target vm -t vmsnap-vm:0.1.0 .   a VM pod: QEMU under the vmsnap launcher
# Without a registry, cluster/images/build.sh builds both with buildah on locally built bases
# (passed as NODE_IMAGE and NODE_SLIM_IMAGE).

ARG NODE_IMAGE=node:20-bookworm
ARG NODE_SLIM_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Scripts are skipped here: `install` builds the native addon against headers that the
# official image keeps under /usr/local (the script expects /usr), and `prepare` needs sources.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle-cli.mjs scripts/build-engine-snapshot.mjs ./scripts/
COPY api ./api
COPY kube ./kube
# agent/ holds the node agent (agent/src) and the VM pod's launcher (agent/launcher).
COPY agent ./agent
COPY operator ./operator
# The kubectl-vmsnap plugin (bin/kubectl-vmsnap runs dist/plugin).
COPY plugin ./plugin
# Only for the drift check below: the CRDs, chart files and API reference must match the schemas.
COPY crds ./crds
COPY helm ./helm
COPY docs/reference.md ./docs/reference.md
RUN rm -rf agent/native/build \
 && npx node-gyp rebuild --directory=agent/native --nodedir=/usr/local \
 && npx tsc -p tsconfig.build.json \
 && node scripts/bundle-cli.mjs \
 && node dist/api/gen-crds.js --check \
 && npm prune --omit=dev

# Everything both images share: QEMU, tini, setpriv (util-linux) and the built application.
FROM ${NODE_SLIM_IMAGE} AS app
# QEMU >= 9.1 is needed (mapped-ram + direct-io); bookworm has 7.2, bookworm-backports has 10.x.
# The suite is added to the image's own Debian source, so the mirror stays whatever the base uses.
RUN set -eux; \
    sed -i -E 's/^(Suites: bookworm)( bookworm-updates)?$/\1\2 bookworm-backports/' /etc/apt/sources.list.d/debian.sources; \
    grep -q 'bookworm-backports' /etc/apt/sources.list.d/debian.sources; \
    apt-get update; \
    apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils; \
    apt-get install -y --no-install-recommends ca-certificates tini util-linux zstd; \
    rm -rf /var/lib/apt/lists/*; \
    qemu-system-x86_64 --version

WORKDIR /app
# A base may trust its build machine's CA for npm (cluster/images/base.sh does); the images reach
# only the API server, whose CA comes with the credentials, and Node parses no extra bundle at start.
ENV NODE_ENV=production NODE_EXTRA_CA_CERTS=
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY bin ./bin
# On PATH: `kubectl vmsnap` works in a shell of the operator's container (kubectl exec).
RUN ln -s /app/bin/kubectl-vmsnap /usr/local/bin/kubectl-vmsnap && kubectl-vmsnap --help >/dev/null
# The engine's start-up snapshot must be built by the node that runs it: this image's.
COPY scripts/build-engine-snapshot.mjs ./scripts/build-engine-snapshot.mjs
RUN node scripts/build-engine-snapshot.mjs && test -f dist/cli/engine.blob
# packageRoot() looks for package.json next to agent/native; the addon loads from its build dir.
COPY --from=build /src/agent/native/build/Release/vmsnap_native.node ./agent/native/build/Release/vmsnap_native.node
COPY crds ./crds

# A VM pod: the launcher owns QEMU (the container's args are QEMU's command line) and takes the
# node agent's fds for saves and restores. Unprivileged: the pod runs as the tenant.
FROM app AS vm
RUN test -f dist/agent/launcher/main.js || { echo "no dist/agent/launcher/main.js: tsc did not build agent/launcher" >&2; exit 1; }
USER 10001
# tini reaps children: the launcher restarts QEMU for a restore.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/agent/launcher/main.js"]
CMD []

# The operator and node agent; last, so a plain `docker build` makes this one.
FROM app AS runtime
# tini reaps children: the agent starts QEMU processes.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/operator/main.js"]
