# syntax=docker/dockerfile:1
# One image with both binaries: portcullis-cp (control plane) and portcullis-gw (edge gateway).
# Build: docker build -t portcullis:0.1.0 .   (docs/deploy.md)

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# protoc compiles proto/ at build time (portcullis-proto's build script).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep crates and incremental builds across image builds; the binaries are copied
# out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis-cp --bin portcullis-gw \
 && mkdir -p /out \
 && cp target/release/portcullis-cp target/release/portcullis-gw /out/

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: for the system roots a rediss:// Redis or an HTTPS upstream may rely on.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin portcullis \
 && mkdir -p /var/lib/portcullis \
 && chown 10001:10001 /var/lib/portcullis
COPY --from=build /out/portcullis-cp /out/portcullis-gw /usr/local/bin/
# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# Both binaries stop cleanly on SIGINT and SIGTERM; SIGINT also matches `docker run -it` Ctrl-C.
STOPSIGNAL SIGINT
# Management API, sync, proxy, HTTPS proxy, gateway admin (/hello, /ready, /metrics).
EXPOSE 7080 7443 8080 8443 9080
CMD ["portcullis-cp", "--help"]
