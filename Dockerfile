# The same images scripts/images builds without Docker (docs/operations.md, "Images"), for people who
# build with Docker or BuildKit:
#
#   docker build --target gateway  -t ghcr.io/herald-dev/herald-gateway:0.1.0 .
#   docker build --target operator -t ghcr.io/herald-dev/herald-operator:0.1.0 .
#
# Both binaries link glibc only (TLS roots are compiled in), so the runtime base is distroless's
# glibc image: no shell, no package manager, user 65532.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald-gateway -p herald-operator \
        --bin herald-gateway --bin herald-operator \
 && install -D target/release/herald-gateway /out/herald-gateway \
 && install -D target/release/herald-operator /out/herald-operator \
 && install -d -m 0755 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS gateway
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="herald-gateway" \
      org.opencontainers.image.description="Herald herald-gateway: real-time notifications for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/herald-gateway /usr/local/bin/herald-gateway
# The working directory holds the embedded default's SQLite file (.herald-data/): the user's own.
COPY --from=build --chown=65532:65532 /out/data /var/lib/herald
USER 65532:65532
WORKDIR /var/lib/herald
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/herald-gateway"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="herald-operator" \
      org.opencontainers.image.description="Herald herald-operator: real-time notifications for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/herald-operator /usr/local/bin/herald-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/herald-operator"]
