# spate's container image: built in a Rust stage, run from a distroless image with only the C
# runtime (no shell, no package manager) as a non-root user; the WAL lives on a volume.
#
#   podman build -t spate:latest .        (or docker / buildah bud)
#   podman run -p 9095:9095 -v spate-wal:/data spate:latest
#
# The deployment manifests in deploy/kubernetes use this image.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Without the profile's debug info, stripped: the image carries only what runs.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --release --locked --bin spate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/spate /usr/local/bin/spate
COPY config/agent.yml /etc/spate/prometheus.yml
USER 65532:65532
VOLUME ["/data"]
EXPOSE 9095
ENTRYPOINT ["/usr/local/bin/spate"]
CMD ["--config.file=/etc/spate/prometheus.yml", "--storage.agent.path=/data", "--web.listen-address=:9095"]
