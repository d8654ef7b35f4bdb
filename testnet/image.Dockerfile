# The node image on top of the root filesystem that scripts/image.sh assembles
# and imports (no registry needed). Build it with scripts/image.sh, not by hand.
ARG ROOTFS=atmosphere-rootfs:local
FROM ${ROOTFS}
ARG UID_GID=10001

# Defaults a container needs: the model cache is mounted at /cache (read-only
# is enough), the identity lives in the /data volume, the API listens on every
# interface of the container.
ENV ATMOSPHERE_CACHE=/cache \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so \
    HOME=/data \
    RUST_LOG=info
USER ${UID_GID}:${UID_GID}
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000/tcp 11450/tcp 11450/udp

HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/atmosphere", "health", "--node", "http://127.0.0.1:8000"]
ENTRYPOINT ["/usr/local/bin/atmosphere"]
CMD ["start", "--http", "0.0.0.0:8000", "--data-dir", "/data"]
