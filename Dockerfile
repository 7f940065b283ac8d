# spate's container image: built in a Rust stage, run from a distroless image with only the C
# runtime (no shell, no package manager) as a non-root user; the WAL lives on a volume.
#
#   podman build -t spate:latest .        (or docker / buildah bud)
#   podman run -p 9095:9095 -v spate-wal:/data spate:latest
#
# The deployment manifests in deploy/kubernetes use this image.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not fetch and build them again.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | tail -n +2); do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo fetch --locked
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin spate && strip target/release/spate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/spate /usr/local/bin/spate
COPY config/agent.yml /etc/spate/prometheus.yml
USER 65532:65532
VOLUME ["/data"]
EXPOSE 9095
ENTRYPOINT ["/usr/local/bin/spate"]
CMD ["--config.file=/etc/spate/prometheus.yml", "--storage.agent.path=/data", "--web.listen-address=:9095"]
