# syntax=docker/dockerfile:1
# One image for the operator and the node agent (the Helm chart picks the entry point).
#   docker build -t vmsnap:0.1.0 .

# QEMU >= 9.1 is needed (mapped-ram + direct-io); bookworm has 7.2, bookworm-backports has 10.x.
# The suite is added to the image's own Debian source, so the mirror stays whatever the base uses.
ARG NODE_IMAGE=node:20-bookworm

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Scripts are skipped here: `install` builds the native addon against headers that the
# official image keeps under /usr/local (the script expects /usr), and `prepare` needs sources.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle-cli.mjs scripts/build-engine-snapshot.mjs ./scripts/
COPY api ./api
COPY agent ./agent
COPY operator ./operator
# Only for the drift check below: the CRDs and chart files must match the schemas.
COPY crds ./crds
COPY helm ./helm
RUN rm -rf agent/native/build \
 && npx node-gyp rebuild --directory=agent/native --nodedir=/usr/local \
 && npx tsc -p tsconfig.build.json \
 && node scripts/bundle-cli.mjs \
 && node dist/api/gen-crds.js --check \
 && npm prune --omit=dev

FROM ${NODE_IMAGE}-slim AS runtime
RUN set -eux; \
    sed -i -E 's/^(Suites: bookworm)( bookworm-updates)?$/\1\2 bookworm-backports/' /etc/apt/sources.list.d/debian.sources; \
    grep -q 'bookworm-backports' /etc/apt/sources.list.d/debian.sources; \
    apt-get update; \
    apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils; \
    apt-get install -y --no-install-recommends ca-certificates tini util-linux; \
    rm -rf /var/lib/apt/lists/*; \
    qemu-system-x86_64 --version

WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY bin ./bin
# The engine's start-up snapshot must be built by the node that runs it: this image's.
COPY scripts/build-engine-snapshot.mjs ./scripts/build-engine-snapshot.mjs
RUN node scripts/build-engine-snapshot.mjs && test -f dist/cli/engine.blob
# packageRoot() looks for package.json next to agent/native; the addon loads from its build dir.
COPY --from=build /src/agent/native/build/Release/vmsnap_native.node ./agent/native/build/Release/vmsnap_native.node
COPY crds ./crds

# tini reaps children: the agent starts QEMU processes.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/operator/main.js"]
